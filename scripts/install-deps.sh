#!/usr/bin/env bash
# Installs every system package Overlord needs to build, test and benchmark (Debian; run as root).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq \
    pkg-config libclang-dev clang libtesseract-dev libleptonica-dev tesseract-ocr-eng libpcre2-dev \
    nmap openssh-server redis-server mosquitto nginx-light vsftpd python3-aiosmtpd \
    xvfb x11vnc tigervnc-standalone-server xterm x11-apps x11-utils xauth vncsnapshot imagemagick opencv-data \
    xfonts-base fonts-dejavu-core fonts-urw-base35 fonts-noto-mono \
    nftables iproute2 netcat-openbsd zmap masscan \
    unbound bind9 chrony snmpd memcached \
    ngircd inspircd haproxy lighttpd dovecot-imapd exim4-daemon-light \
    postgresql mariadb-server cups-daemon rabbitmq-server >/dev/null
# (UDP scan tests: unbound, chrony, snmpd, memcached; service lab: the rest. Package scripts do
# not start them in containers (policy-rc.d); the tests start their own copies on loopback.)
# proftpd-core conflicts with vsftpd (both provide ftp-server), so the service lab's proftpd is
# unpacked beside the system, not installed: /opt/overlord-lab/proftpd/usr/sbin/proftpd.
if [ ! -x /opt/overlord-lab/proftpd/usr/sbin/proftpd ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && $SUDO chmod 777 . && apt-get download -qq proftpd-core >/dev/null 2>&1 \
        && $SUDO mkdir -p /opt/overlord-lab/proftpd \
        && $SUDO dpkg-deb -x proftpd-core_*.deb /opt/overlord-lab/proftpd) \
        || echo "install-deps: proftpd-core not unpacked (the lab bench will skip proftpd)" >&2
    rm -rf "$tmp"
fi
# The firehose: tests start a real nats-server (JetStream); the Python consumer example uses nats-py.
$SUDO apt-get install -y -qq nats-server python3-pip >/dev/null
$SUDO pip install --break-system-packages -q nats-py
# The Python gRPC client example (examples/grpc_client.py) generates its stubs from proto/ at run
# time with grpcio-tools; its CI test runs it.
$SUDO pip install --break-system-packages -q grpcio grpcio-tools
# `overlord bench query` compares against PostgreSQL 15 (JSONB + GIN, installed above) and DuckDB
# (a Python package; benchmarks only, so a failed install only skips that peer).
$SUDO pip install --break-system-packages -q duckdb >/dev/null 2>&1 || echo "install-deps: duckdb not installed" >&2
