#!/usr/bin/env bash
# Sets up a fresh machine (Debian, Python 3.11+) for edgeplane: the system packages the tests
# and reference deployments use, and a virtual environment in .venv with every distribution
# of this repository installed in editable mode. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# system packages: mosquitto is the MQTT broker of the tests and of the demo's cloud end;
# nats-server (a JetStream cluster with MQTT) and postgresql are edgeplane-cloud's scale-out back end;
# socat makes the virtual serial pairs of the Modbus RTU tests; systemd-analyze checks rendered units;
# chromium and chromium-driver run the web consoles' tests headless
packages=(mosquitto mosquitto-clients socat systemd chromium chromium-driver nats-server postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
echo "setup: installing edgeplane and its plugins (editable)"
.venv/bin/python -m pip install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
# pysparkplug: the independent Sparkplug B host application the Sparkplug uplink is tested against
# (uplinks/sparkplug/tests); it needs paho-mqtt 1.x, so it gets an environment of its own
if [ ! -x .venv/peers/sparkplug/bin/python ]; then
  echo "setup: installing pysparkplug (the tests' Sparkplug host application) in .venv/peers/sparkplug"
  "$PYTHON" -m venv .venv/peers/sparkplug
  .venv/peers/sparkplug/bin/python -m pip install -q pysparkplug==0.6.1 "paho-mqtt==1.6.1" 2>&1 | grep -v "is ignored" || true
fi
# node-opcua: the independent OPC UA server the OPC UA connector is tested against
if [ ! -d connectors/opcua/tests/node/node_modules/node-opcua ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing Node.js and npm (for the node-opcua test server)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "setup: installing node-opcua for the OPC UA tests"
  npm ci --prefix connectors/opcua/tests/node --no-audit --no-fund --loglevel=error >/dev/null
fi
echo "setup: done (.venv/bin/edgeplane)"
