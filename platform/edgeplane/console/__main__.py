"""``python -m edgeplane.console hash-password``: print an argon2 hash for a console user's password.

The password is read without echo (or from stdin when piped); put the hash in a secret file and
reference it from the site: ``password_hash: "${file:secrets/alice.hash}"``. Exit 2 on bad input.
"""

from __future__ import annotations

import getpass
import sys

from edgeplane.console.auth import hash_password


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["hash-password"]:
        print("usage: python -m edgeplane.console hash-password   (reads the password, prints its argon2 hash)", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_password(password))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
