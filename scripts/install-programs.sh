#!/usr/bin/env bash
# Makes sure the programs the tests run (real servers, and promtool) are installed, from
# Debian's packages.
#
#   scripts/install-programs.sh nats-server redis-server chromium promtool prometheus [PROGRAM...]
#
# For each program named: nothing to do when it is already on PATH; otherwise, as root,
# `apt-get update` (once per run) and `apt-get install -y PACKAGE`; not as root, it prints the
# command to run and exits with status 1. Installing never leaves a service running: the tests
# start their own servers on free loopback ports, and this script stops any service a package
# started by itself.
#
# To add a program, add a case to `package_of` (and, if its package starts a service, to
# `stop_service_of`).
set -euo pipefail

apt_updated=0

# The Debian package that provides PROGRAM.
package_of() {
    case "$1" in
        nats-server) echo nats-server ;;
        # The Redis design the load test races against (`presence load --against redis`).
        redis-server) echo redis-server ;;
        # The browser test of the gateway's page drives headless Chromium over the DevTools
        # protocol; chromedriver is only for those who prefer WebDriver (no test needs it).
        chromium) echo chromium ;;
        chromedriver) echo chromium-driver ;;
        # `promtool check metrics` checks the gateway's `GET /metrics` (Prometheus's own tool),
        # and a real Prometheus scrapes it with the host's bearer.
        promtool | prometheus) echo prometheus ;;
        *)
            echo "install-programs.sh: no rule to install '$1' (add a case to package_of)" >&2
            return 1
            ;;
    esac
}

# The service a package may have started on install, to stop again (empty: none).
stop_service_of() {
    case "$1" in
        nats-server) echo nats-server ;;
        redis-server) echo redis-server ;;
        # The package installs the Prometheus server as a service too; the tests start their
        # own on a free loopback port.
        promtool | prometheus) echo prometheus ;;
        *) echo "" ;;
    esac
}

stop_service() {
    local service="$1"
    [ -n "$service" ] || return 0
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
        systemctl disable "$service" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1 && service "$service" status >/dev/null 2>&1; then
        service "$service" stop >/dev/null 2>&1 || true
    fi
}

# Whether PROGRAM is installed: on PATH, or in an sbin directory (Debian puts servers such as
# nats-server in /usr/sbin, which is not on every user's PATH).
installed() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ] || [ -x "/sbin/$1" ]
}

ensure() {
    local program="$1" package
    package="$(package_of "$program")"
    if installed "$program"; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-programs.sh: '$program' is not installed and this is not root." >&2
        echo "  Install it with:  sudo apt-get update && sudo apt-get install -y $package" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    # Prometheus recommends its node exporter, a second service listening on every address:
    # the tests need neither, so recommended packages stay out for it.
    local extra=()
    [ "$package" = prometheus ] && extra=(--no-install-recommends)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${extra[@]}" "$package" >/dev/null
    stop_service "$(stop_service_of "$program")"
    if ! installed "$program"; then
        echo "install-programs.sh: installed $package but '$program' is still not there" >&2
        exit 1
    fi
    echo "install-programs.sh: installed $package"
}

if [ "$#" -eq 0 ]; then
    echo "usage: scripts/install-programs.sh PROGRAM... (known: nats-server, redis-server, chromium, chromedriver, promtool, prometheus)" >&2
    exit 2
fi
for program in "$@"; do
    ensure "$program"
done
