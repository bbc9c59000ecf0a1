# Shared by the scripts that start private RabbitMQ nodes (tls-node, rabbit-cluster): where
# RabbitMQ's own scripts are, free loopback ports, and stopping a node by its own pids.

# The directory of RabbitMQ's own scripts (rabbitmq-server, rabbitmqctl). Debian's /usr/sbin
# wrappers would `su rabbitmq`, dropping HOME (and so the private cookie).
rabbitmq_bin() {
  if [ -n "${RABBITMQ_BIN_DIR:-}" ]; then
    echo "$RABBITMQ_BIN_DIR"
  elif [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo /usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    dirname "$(command -v rabbitmq-server)"
  fi
}

# A free TCP port on 127.0.0.1: the kernel's choice (python3), else a random high port that
# nothing listens on. Ports already handed out by this run are skipped, and so are 25672..25682
# and 35672..35682 (Erlang distribution and CLI ranges of other nodes).
taken=" "
free_port() {
  local p
  for _ in $(seq 1 50); do
    if command -v python3 >/dev/null 2>&1; then
      p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    else
      p=$((20000 + RANDOM % 30000))
    fi
    case "$taken" in *" $p "*) continue ;; esac
    if [ "$p" -ge 25672 ] && [ "$p" -le 25682 ]; then continue; fi
    if [ "$p" -ge 35672 ] && [ "$p" -le 35682 ]; then continue; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
    taken="$taken$p "
    echo "$p"
    return 0
  done
  echo "no free port found" >&2
  return 1
}

port_open() {
  # shellcheck disable=SC2016 # $1 is the inner shell's argument
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Ends a node by the pids in the given files, if still alive (launcher first: on TERM it stops
# the VM); nothing else is touched.
kill_pids() {
  local f pid
  for f in "$@"; do
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
