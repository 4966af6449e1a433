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
    nftables iproute2 netcat-openbsd \
    unbound bind9 chrony snmpd memcached \
    ngircd inspircd haproxy lighttpd proftpd-core dovecot-imapd exim4-daemon-light \
    postgresql mariadb-server cups-daemon rabbitmq-server >/dev/null
# (UDP scan tests: unbound, chrony, snmpd, memcached; service lab: the rest. Package scripts do
# not start them in containers (policy-rc.d); the tests start their own copies on loopback.)
