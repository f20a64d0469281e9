#!/usr/bin/env bash
# Makes sure the system packages the integration tests start are installed (Debian/Ubuntu):
#   socat (virtual serial lines), mbpoll (Modbus CLI master), mosquitto (MQTT broker), influxdb (influxd),
#   python3-pymodbus + python3-serial-asyncio (Modbus RTU server fixture, run with /usr/bin/python3),
#   python3-serial (pyserial: the scripted hostile RTU slave, test/fixtures/hostile_rtu_slave.py),
#   python3-jinja2 (renders the Home Assistant discovery templates in a test),
#   python3-cryptography (the MQTT TLS tests' per-run PKI, test/fixtures/make_test_certs.py),
#   prometheus (promtool checks /metrics; a real server scrapes the agent), chromium (headless: the
#   status page renders and updates live),
#   openipmi (ipmi_sim: a real IPMI BMC on a loopback UDP port) and ipmitool (the IPMI BMC transport
#   itself, and its tests against ipmi_sim), openssl (a self-signed BMC certificate for the Redfish https test),
#   mount (util-linux: the outbox fault tests mount their own tmpfs, as root), make + g++ (npm ci
#   compiles better-sqlite3 with node-gyp when its prebuilt binary cannot be downloaded, as on a Pi),
#   dpkg-dev (dpkg-shlibdeps for scripts/build-deb.sh), lintian (checks the built .deb) and
#   systemd (systemd-analyze verifies the units; it is only a command here, nothing is started).
# Installs what is missing when root (or via passwordless sudo); otherwise prints what to install and
# exits 1. Tests start their own broker/database on free loopback ports in temp dirs, so services that
# apt would start system-wide are kept from starting (policy-rc.d) and stopped if they started anyway.
set -euo pipefail

log() { printf 'ensure-system-deps: %s\n' "$*"; }

# mosquitto lives in /usr/sbin, which is not on a normal user's PATH on Debian.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
check_command() { # command package
  if command -v "$1" >/dev/null 2>&1; then
    log "ok: $1 ($(command -v "$1"))"
  else
    log "missing: $1 (package $2)"
    missing+=("$2")
  fi
}

check_all() {
  missing=()
  check_command socat socat
  check_command mbpoll mbpoll
  check_command mosquitto mosquitto
  check_command influxd influxdb
  check_command promtool prometheus
  check_command chromium chromium
  check_command mount mount
  check_command ipmi_sim openipmi
  check_command ipmitool ipmitool
  check_command openssl openssl
  check_command mkfifo coreutils
  check_command make make
  check_command g++ g++
  check_command strip binutils
  check_command dpkg-shlibdeps dpkg-dev
  check_command lintian lintian
  check_command systemd-analyze systemd
  # python3-serial-asyncio is only a Recommends of python3-pymodbus, so --no-install-recommends skips it,
  # yet pymodbus.server imports it.
  if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import pymodbus, pymodbus.server, serial_asyncio' >/dev/null 2>&1; then
    log "ok: pymodbus $(/usr/bin/python3 -c 'import pymodbus; print(pymodbus.__version__)') for /usr/bin/python3"
  else
    log "missing: pymodbus/serial_asyncio for /usr/bin/python3 (packages python3-pymodbus python3-serial-asyncio)"
    missing+=(python3-pymodbus python3-serial-asyncio)
  fi
  if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import serial' >/dev/null 2>&1; then
    log "ok: pyserial $(/usr/bin/python3 -c 'import serial; print(serial.__version__)') for /usr/bin/python3"
  else
    log "missing: pyserial for /usr/bin/python3 (package python3-serial)"
    missing+=(python3-serial)
  fi
  # cryptography makes the per-run test PKI of the MQTT TLS tests (test/fixtures/make_test_certs.py).
  if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1; then
    log "ok: cryptography $(/usr/bin/python3 -c 'import cryptography; print(cryptography.__version__)') for /usr/bin/python3"
  else
    log "missing: cryptography for /usr/bin/python3 (package python3-cryptography)"
    missing+=(python3-cryptography)
  fi
  # Jinja2 renders the Home Assistant discovery templates against real payloads (test/integration/ha-discovery.test.ts).
  if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import jinja2' >/dev/null 2>&1; then
    log "ok: jinja2 $(/usr/bin/python3 -c 'import jinja2; print(jinja2.__version__)') for /usr/bin/python3"
  else
    log "missing: jinja2 for /usr/bin/python3 (package python3-jinja2)"
    missing+=(python3-jinja2)
  fi
}

check_all
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all system dependencies present; nothing to do"
  exit 0
fi

install_cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  log "cannot install without root (no passwordless sudo). Run as root:"
  printf '  %s\n' "$install_cmd"
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "no apt-get on this system; install the equivalents of: ${missing[*]}"
  exit 1
fi

# Keep maintainer scripts from starting mosquitto/influxdb as system services (invoke-rc.d and
# deb-systemd-invoke both honour policy-rc.d; exit 101 = "action forbidden"). Only ours is removed again.
policy=/usr/sbin/policy-rc.d
own_policy=0
remove_policy() {
  if [[ $own_policy -eq 1 ]]; then
    "${as_root[@]}" rm -f "$policy"
    log "removed temporary $policy"
  fi
}
trap remove_policy EXIT
if [[ ! -e $policy ]]; then
  log "installing temporary $policy so apt starts no services"
  printf '#!/bin/sh\n# temporary, from rackguard scripts/ensure-system-deps.sh\nexit 101\n' |
    "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  own_policy=1
else
  log "keeping existing $policy"
fi

log "running: $install_cmd"
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Belt and braces: if a service started anyway, stop it (and keep it from starting at boot). Only the
# packages installed just now; never fail here (no systemd in containers).
for pkg in "${missing[@]}"; do
  case $pkg in
    mosquitto) service=mosquitto ;;
    influxdb) service=influxdb ;;
    prometheus) service=prometheus ;;
    *) continue ;;
  esac
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    log "stopping and disabling system service $service (systemd)"
    "${as_root[@]}" systemctl stop "$service" >/dev/null 2>&1 || true
    "${as_root[@]}" systemctl disable "$service" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$service ]] && command -v service >/dev/null 2>&1; then
    log "stopping system service $service (sysv)"
    "${as_root[@]}" service "$service" stop >/dev/null 2>&1 || true
  fi
done

check_all
if [[ ${#missing[@]} -ne 0 ]]; then
  log "still missing after install: ${missing[*]}"
  exit 1
fi
log "all system dependencies installed"
