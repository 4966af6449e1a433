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
    nftables iproute2 netcat-openbsd zmap masscan >/dev/null
