#!/usr/bin/env python3
"""Print RabbitMQ definitions (JSON) for mp3converter: an administrator and one user per service,
each allowed only its own queues, with salted SHA-256 password hashes (never the passwords).

usage: scripts/rabbitmq_definitions.py --admin-user NAME --admin-password PW
           --password gateway=PW --password converter=PW --password notification=PW
           [--vhost /] [--video-queue video] [--mp3-queue mp3] [--permissions-only]

What each service may touch (configure = declare, write = publish, read = consume), through the
default exchange (`amq.default`) only: the gateway its video queue; the converter the video and
mp3 queues; the notification the mp3 queue. Each queue Q comes with Q.retry and Q.dead.
--permissions-only prints `USER CONFIGURE WRITE READ` lines instead (scripts/pods-up.sh applies
them with rabbitmqctl on the host's broker).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys


def queues_regex(*queues: str) -> str:
    alts = "|".join(f"{re.escape(q)}(\\.retry|\\.dead)?" for q in queues)
    return f"^(amq\\.default|{alts})$"


def service_permissions(video: str, mp3: str) -> dict[str, str]:
    return {"gateway": queues_regex(video), "converter": queues_regex(video, mp3), "notification": queues_regex(mp3)}


def password_hash(password: str) -> str:
    # rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), 4-byte salt.
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admin-user", default="admin")
    ap.add_argument("--admin-password")
    ap.add_argument("--password", action="append", default=[], metavar="SERVICE=PW")
    ap.add_argument("--vhost", default="/")
    ap.add_argument("--video-queue", default="video")
    ap.add_argument("--mp3-queue", default="mp3")
    ap.add_argument("--user-prefix", default="", help="prefix of the service users' names")
    ap.add_argument("--permissions-only", action="store_true")
    args = ap.parse_args()
    perms = service_permissions(args.video_queue, args.mp3_queue)
    if args.permissions_only:
        for svc, rx in perms.items():
            print(f"{args.user_prefix}{svc} {rx} {rx} {rx}")
        return 0
    passwords = dict(p.split("=", 1) for p in args.password)
    missing = sorted(set(perms) - set(passwords)) + ([] if args.admin_password else ["admin"])
    if missing:
        print(f"rabbitmq_definitions.py: no password for {', '.join(missing)}", file=sys.stderr)
        return 2
    if any(len(pw) < 16 or pw == "guest" for pw in [args.admin_password, *passwords.values()]):
        print("rabbitmq_definitions.py: every password must be at least 16 characters (generate them)", file=sys.stderr)
        return 2
    users = [{"name": args.admin_user, "password_hash": password_hash(args.admin_password),
              "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"}]
    permissions = [{"user": args.admin_user, "vhost": args.vhost, "configure": ".*", "write": ".*", "read": ".*"}]
    for svc, rx in perms.items():
        name = f"{args.user_prefix}{svc}"
        users.append({"name": name, "password_hash": password_hash(passwords[svc]),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""})
        permissions.append({"user": name, "vhost": args.vhost, "configure": rx, "write": rx, "read": rx})
    json.dump({"users": users, "vhosts": [{"name": args.vhost}], "permissions": permissions}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
