"""Tests of edgeplane-cloud (a package so that their module names are ``cloud.tests.*``)."""
