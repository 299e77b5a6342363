#!/usr/bin/env bash
# Makes sure the real services the tests talk to are installed and answering:
# PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379, the Prometheus,
# Alertmanager, node exporter and kubectl binaries, and Debian's Chromium for the dashboard's browser tests. Installs Debian packages where missing, starts stopped services
# with the system's own commands. Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0

apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    if port_open "$port"; then return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

# --- PostgreSQL -------------------------------------------------------------
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-services: installing PostgreSQL"
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h | grep -q "^$version main"; then
    $SUDO pg_createcluster "$version" main >/dev/null
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
fi
# A password for the postgres role and a trust-free TCP login, so the test URL works
# whatever the cluster's pg_hba says.
$SUDO -u postgres psql -q -h /var/run/postgresql -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 \
  || runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
for db in gpuops_test; do
  if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
    runuser -u postgres -- createdb "$db"
  fi
done

# --- Redis --------------------------------------------------------------------
if ! port_open 6379; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: installing Redis"
    apt_install redis-server
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
fi

# --- Prometheus and kubectl binaries (started by the tests themselves) -------
if ! command -v prometheus >/dev/null 2>&1; then
  echo "ensure-services: installing Prometheus"
  apt_install prometheus
fi
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "ensure-services: installing Alertmanager"
  apt_install prometheus-alertmanager
fi
if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  echo "ensure-services: installing the node exporter"
  apt_install prometheus-node-exporter
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "ensure-services: installing kubectl"
  apt_install kubernetes-client
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "ensure-services: installing Chromium"
  apt_install chromium
fi
# Debian's prometheus packages start system services on install where they can; the
# tests start their own on free ports, so those are left alone.
echo "ensure-services: PostgreSQL, Redis, prometheus, alertmanager, node exporter, kubectl and chromium are ready"
