#!/usr/bin/env bash
# Installs every system package Overlord needs to build, test and benchmark (Debian; run as root).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    pkg-config libclang-dev clang libtesseract-dev libleptonica-dev tesseract-ocr-eng \
    nmap openssh-server redis-server mosquitto nginx-light vsftpd \
    xvfb x11vnc tigervnc-standalone-server xterm x11-apps x11-utils imagemagick opencv-data \
    nftables iproute2 netcat-openbsd \
    libpcre2-dev python3-aiosmtpd >/dev/null
