#!/usr/bin/env bash
# Make sure a MariaDB answers at 127.0.0.1:3306 as root without a password (the target
# tests' TEST_MYSQL_URL default). Cheap when it already does: one TCP probe, then exit.
# Otherwise: install mariadb-server from Debian if missing, start it, and let root in
# over TCP without a password (Debian's root uses unix_socket auth, which TCP cannot).
set -euo pipefail
HOST=127.0.0.1
PORT=3306

up() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

if up; then
  exit 0
fi
echo "== MariaDB not answering at $HOST:$PORT: installing/starting it"
if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mariadb-server >/dev/null
fi
if command -v service >/dev/null 2>&1 && [ -x /etc/init.d/mariadb ]; then
  service mariadb start >/dev/null || true
fi
if ! up; then
  # No init script (a bare container): run the server in the background ourselves.
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  (mysqld_safe --bind-address="$HOST" --port="$PORT" >/tmp/mariadb-ci.log 2>&1 &)
fi
for _ in $(seq 1 60); do
  up && break
  sleep 1
done
up || { echo "MariaDB did not start (see /tmp/mariadb-ci.log)" >&2; exit 1; }
# Over the local socket, root is let in by unix_socket auth; open TCP without a password.
mariadb -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
  GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
  ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('')
    OR unix_socket;
  FLUSH PRIVILEGES;"
echo "== MariaDB ready at $HOST:$PORT"
