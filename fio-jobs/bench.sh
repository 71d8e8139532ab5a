#!/bin/bash
# hablock benchmark: the same fio jobs against several NBD servers, in one run.
#
#   fio-jobs/bench.sh [--quick] [--only REGEX] [--workloads REGEX]
#                     [--runtime S] [--ramp S] [--passes N] [--size SIZE]
#                     [--dir DIR] [--out DIR] [--keep] [--list]
#
# Every server serves the same kind of backing file (fully written, on DIR,
# default /var/tmp) over a Unix socket of this host. For each pass, each
# workload (fio-jobs/*.fio) runs against each server in turn, a fresh server
# per run; the server order is reversed on every other pass. The report takes
# medians over the passes and the ratio of each hablock configuration to its
# baseline (docs/benchmarks.md says how to read it).
#
# Adding a server: one line in server_table (name, kind, baseline, targets,
# parameters) and, for a new kind, one start_KIND function that spawns its
# processes with `spawn` and sets SRV_URI. Everything else is generic.
#
# Needs: fio (nbd engine), nbdkit, nbdinfo, qemu-storage-daemon,
# /usr/bin/python3 (the report). Exit: 0 all runs ok, 1 some run failed (the
# report is still written), 2 usage, 3 setup failed.

set -eu -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PLUGIN=${HABLOCK_PLUGIN:-$REPO/build/nbdkit-plugin/nbdkit-hablock-plugin.so}
PY=/usr/bin/python3          # not whatever python3 comes first on PATH
HACTL=${HACTL:-$REPO/build/ctl/hactl}
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH

RUNTIME=6 RAMP=2 PASSES=2 SIZE=1G
ONLY='' WORKLOADS='' DIR=/var/tmp OUT='' KEEP=0 LIST=0
READY_TIMEOUT=30             # seconds for a server to accept a connection
STOP_TIMEOUT=10              # seconds between SIGTERM and SIGKILL

usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  cat <<EOF
Options:
  --quick            smoke test: --runtime 2 --ramp 1 --passes 1
  --only REGEX       servers whose name matches (bash regex); see --list
  --workloads REGEX  fio jobs whose name matches
  --runtime S        measured seconds per run (default $RUNTIME)
  --ramp S           unmeasured warm-up seconds per run (default $RAMP)
  --passes N         repeats; order reversed on even passes (default $PASSES)
  --size SIZE        backing file size, IEC suffixes (default $SIZE)
  --dir DIR          where the backing file goes (default $DIR; use ext4)
  --out DIR          results (default /var/tmp/hablock-bench-results/DATE)
  --keep             keep the work directory (backing file, server logs)
  --list             print the servers and workloads, then exit
Environment: HABLOCK_PLUGIN (default $PLUGIN)
EOF
}

die()  { echo "bench.sh: $*" >&2; exit 3; }
note() { echo "bench.sh: $*" >&2; }

# ---------------------------------------------------------------------------
# What is measured.

# name  kind  baseline  targets  parameters (the kind's, space separated)
# baseline: the server whose figures the ratios divide by ("-": none).
# targets:  a class of target_table ("-": none).
server_table() {
  echo "nbdkit-file  nbdkit-file  -  -  -"
  echo "qsd-direct   qsd          -  -  cache.direct=on,aio=io_uring"
  local cache io short base targets
  for cache in writeback none; do
    case $cache in
      writeback) short=wb base=nbdkit-file targets=writeback ;;
      none)      short=none base=qsd-direct targets=direct ;;
    esac
    for io in sync uring aio hybrid; do
      echo "hablock-$short-$io  hablock  $base  $targets  cache=$cache io=$io"
    done
  done
  # Synchronous mirrors: both nodes on this machine (they share its CPU).
  echo "qemu-quorum          qemu-quorum   -            -            -"
  echo "hablock-repl-tls     hablock-repl  qemu-quorum  replicated   cert cache=writeback"
  echo "hablock-repl-notls   hablock-repl  qemu-quorum  replicated   off cache=writeback"
  echo "hablock-repl-tls-none hablock-repl qemu-quorum  -            cert cache=none"
}

# job  label  unit (iops: IOPS; mbps: MB/s)
workload_table() {
  cat <<'EOF'
randwrite-4k-qd1        4k-randwrite-QD1        iops
randwrite-4k-qd32       4k-randwrite-QD32       iops
randread-4k-qd32        4k-randread-QD32        iops
write-1m-qd8            1M-seq-write-QD8        mbps
randwrite-4k-fsync-qd1  4k-randwrite+flush-QD1  iops
EOF
}

# class  job  metric  op  value
# metric thr: throughput ratio (IOPS or MB/s, server / baseline);
#        lat: mean completion latency ratio; cycle: write+flush cycle time
#        ratio (baseline IOPS / server IOPS, one request in flight).
target_table() {
  cat <<'EOF'
writeback  randwrite-4k-qd32       thr    >=  1.2
writeback  write-1m-qd8            thr    >=  1.0
writeback  randwrite-4k-qd1        lat    <=  1.1
writeback  randwrite-4k-fsync-qd1  cycle  <=  1.1
direct     randwrite-4k-qd1        thr    >=  1.0
direct     randwrite-4k-qd32       thr    >=  1.0
direct     randread-4k-qd32        thr    >=  1.0
direct     write-1m-qd8            thr    >=  1.0
direct     randwrite-4k-fsync-qd1  thr    >=  1.0
replicated randwrite-4k-qd32       thr    >=  1.3
replicated write-1m-qd8            thr    >=  1.5
replicated randwrite-4k-qd1        lat    <=  0.667
EOF
}

# ---------------------------------------------------------------------------
# Server kinds. start_KIND NAME SOCK DISK PARAMS... spawns the processes
# (spawn), sets SRV_URI and returns; the caller waits for readiness. Servers
# listen on Unix sockets only.

start_nbdkit-file() {
  local name=$1 sock=$2 disk=$3
  spawn "$name" nbdkit -f --exit-with-parent -U "$sock" file file="$disk"
  SRV_URI="nbd+unix:///?socket=$sock"
}

start_qsd() {
  local name=$1 sock=$2 disk=$3 opts=$4
  spawn "$name" qemu-storage-daemon \
    --blockdev "driver=file,node-name=file0,filename=$disk,$opts" \
    --blockdev driver=raw,node-name=disk0,file=file0 \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export type=nbd,id=exp0,node-name=disk0,name=disk,writable=on
  SRV_URI="nbd+unix:///disk?socket=$sock"
}

start_hablock() {
  local name=$1 sock=$2 disk=$3
  shift 3
  spawn "$name" nbdkit -f --exit-with-parent -U "$sock" "$PLUGIN_COPY" \
    disk="$disk" "$@"
  SRV_URI="nbd+unix:///?socket=$sock"
}

# The nearest existing synchronous mirror: a quorum of the local file and an
# NBD child (nbdkit's file plugin over TCP loopback: QEMU's own NBD server
# does not set TCP_NODELAY), vote-threshold=2 so a write completes only on
# both. Both images start identical.
start_qemu-quorum() {
  local name=$1 sock=$2 disk=$3 port
  cp --sparse=never "$disk" "$WORK/peer.img"
  prepare_backing "$WORK/peer.img"     # cached like the disk
  port=$(free_port)
  spawn "$name-peer" nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" file file="$WORK/peer.img"
  wait_ready "nbd://127.0.0.1:$port/" || return 0
  spawn "$name" qemu-storage-daemon \
    --blockdev "driver=file,node-name=local-file,filename=$disk,cache.direct=off,aio=threads" \
    --blockdev driver=raw,node-name=local,file=local-file \
    --blockdev "driver=nbd,node-name=peer,server.type=inet,server.host=127.0.0.1,server.port=$port,export=" \
    --blockdev driver=quorum,node-name=mirror,vote-threshold=2,read-pattern=fifo,children.0=local,children.1=peer \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export type=nbd,id=exp0,node-name=mirror,name=mirror,writable=on
  SRV_URI="nbd+unix:///mirror?socket=$sock"
}

# hablock replicated: two nodes (alpha serves, bravo mirrors) over TCP
# loopback, TLS with certificates (cert) or off; the pair is declared
# identical (both files hold the same bytes) with a forced promotion.
start_hablock-repl() {
  local name=$1 sock=$2 disk=$3 tls=$4 pa pb n
  shift 4
  cp --sparse=never "$disk" "$WORK/peer.img"
  prepare_backing "$WORK/peer.img"     # cached like the disk
  [[ -f $WORK/tls/ca.crt ]] || sh "$REPO/tests/tls/mkcerts.sh" "$WORK/tls" >/dev/null 2>&1 ||
    { note "cannot make certificates"; return 0; }
  pa=$(free_port) pb=$(free_port)
  {
    printf '[resource]\nname = bench\ncontrol = %s/%%n.ctl\n' "$WORK"
    if [[ $tls == off ]]; then printf '[tls]\nmode = off\n'
    else printf '[tls]\nca = %s/tls/ca.crt\ncert = %s/tls/%%n.crt\nkey = %s/tls/%%n.key\n' "$WORK" "$WORK" "$WORK"; fi
    printf '[node alpha]\ndisk = %s\naddress = 127.0.0.1:%s\n' "$disk" "$pa"
    printf '[node bravo]\ndisk = %s/peer.img\naddress = 127.0.0.1:%s\n' "$WORK" "$pb"
  } >"$WORK/repl.conf"
  rm -f "$WORK"/alpha.ctl "$WORK"/bravo.ctl "$WORK/$name-b.sock"
  spawn "$name-bravo" nbdkit -f --exit-with-parent -U "$WORK/$name-b.sock" "$PLUGIN_COPY" \
    config="$WORK/repl.conf" node=bravo "$@"
  spawn "$name" nbdkit -f --exit-with-parent -U "$sock" "$PLUGIN_COPY" \
    config="$WORK/repl.conf" node=alpha "$@"
  for n in 1 2; do
    wait_cond "the pair to connect" repl_field alpha connection Connected || return 0
    "$HACTL" --socket "$WORK/alpha.ctl" promote --force >/dev/null || return 0
    wait_cond "bravo to be UpToDate" repl_field bravo disk UpToDate && break
  done
  SRV_URI="nbd+unix:///?socket=$sock"
}

repl_field() {  # NODE FIELD VALUE
  "$HACTL" --socket "$WORK/$1.ctl" status --json 2>/dev/null |
    "$PY" -c 'import json,sys; sys.exit(json.load(sys.stdin)[sys.argv[1]] != sys.argv[2])' "$2" "$3" 2>/dev/null
}

wait_cond() {  # WHAT CMD...: poll with a deadline
  local what=$1 deadline=$((SECONDS + READY_TIMEOUT))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || { note "timed out waiting for $what"; return 1; }
    sleep 0.05
  done
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------
# Processes: every one this script starts is in PIDS and is stopped by PID,
# last started first (a front before the peer it talks to), on every exit.

PIDS=()
WORK=''
PLUGIN_COPY=''

spawn() {
  local name=$1
  shift
  "$@" </dev/null >>"$WORK/logs/$name.log" 2>&1 &
  PIDS+=("$!")
}

gone() {  # no process, or a zombie not yet reaped
  local state
  [[ -e /proc/$1 ]] || return 0
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ $state == Z || -z $state ]]
}

stop_servers() {
  local i pid deadline
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ! gone "$pid" && ((SECONDS < deadline)); do sleep 0.02; done
    if ! gone "$pid"; then
      note "pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# Ready when an NBD client completes the handshake; fails early if a process
# of the server exits.
wait_ready() {
  local uri=$1 pid deadline=$((SECONDS + READY_TIMEOUT))
  while :; do
    for pid in "${PIDS[@]}"; do
      gone "$pid" && { note "server exited before it was ready"; return 1; }
    done
    nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
    ((SECONDS < deadline)) || { note "not ready after ${READY_TIMEOUT}s"; return 1; }
    sleep 0.05
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n $FIO_PID ]]; then
    kill -TERM "$FIO_PID" 2>/dev/null || true
    wait "$FIO_PID" 2>/dev/null || true
  fi
  stop_servers
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ -n $OUT && -d $OUT ]]; then cp -r "$WORK/logs" "$OUT/" 2>/dev/null || true; fi
    if ((KEEP)); then note "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------
# The backing file: SIZE bytes of fio's random data written through the page
# cache and synced, so every block is allocated and holds data.

make_backing() {
  local file=$1 bytes=$2 blocks
  fio --name=fill --filename="$file" --size="$bytes" --rw=write --bs=1M \
      --ioengine=psync --end_fsync=1 --output=/dev/null >/dev/null \
    || die "cannot write $file"
  blocks=$(( $(stat -c '%b * %B' "$file") ))
  ((blocks >= bytes)) || die "$file is sparse ($blocks of $bytes bytes allocated)"
}

# Same start for every run: nothing dirty left by the previous server, the
# whole file in the page cache (page-cache servers read memory; O_DIRECT
# servers bypass it either way), and the same pages: the file is evicted
# first, then read, so the cache holds what readahead makes of it every
# time. Without the eviction the folio sizes depend on earlier runs (an
# O_DIRECT server's writes drop the pages they cover, buffered writes leave
# a large folio as it is), and a 4k write into a large folio costs the
# kernel 2-3x more: the 4k QD32 rows of one server differed 2x between
# passes.
prepare_backing() {
  sync --data "$1"
  dd if="$1" iflag=nocache count=0 status=none
  dd if="$1" of=/dev/null bs=1M status=none
}

# ---------------------------------------------------------------------------
# One run: start the server, run one fio job, stop the server.

# fio in the background and `wait`, so that a signal's trap runs at once (and
# cleanup stops fio) rather than after fio's runtime. JSON to a file: the nbd
# engine prints "fio: connected to NBD server" on stdout.
FIO_PID=''
run_fio() {
  local uri=$1 jobfile=$2 json=$3 log=$4 rc=0
  NBD_URI=$uri RUNTIME=$RUNTIME RAMP=$RAMP \
    timeout --foreground -k 10 $((RUNTIME + RAMP + 60)) \
    fio --output="$json" --output-format=json "$jobfile" </dev/null >"$log" 2>&1 &
  FIO_PID=$!
  wait "$FIO_PID" || rc=$?
  FIO_PID=''
  return "$rc"
}

run_one() {
  local pass=$1 job=$2 name=$3 kind=$4 params=$5
  local tag="p$pass-$job-$name" sock="$WORK/$name.sock" status=ok args=()
  local json="$OUT/fio/$tag.json"
  [[ $params == - ]] || read -r -a args <<<"$params"
  rm -f "$sock"
  prepare_backing "$DISK"
  echo "== pass $pass $job $name" >>"$WORK/logs/$name.log"
  SRV_URI=''
  "start_$kind" "$name" "$sock" "$DISK" "${args[@]}"
  if ! wait_ready "$SRV_URI"; then
    status=no-server
  elif ! run_fio "$SRV_URI" "$HERE/$job.fio" "$json" "$OUT/fio/$tag.log"; then
    status=fio-failed
  fi
  stop_servers
  printf '%s\t%s\t%s\t%s\t%s\n' "$pass" "$job" "$name" "$status" "$json" \
    >>"$OUT/runs.tsv"
  printf '  %-8s %-24s %-22s %s\n' "pass $pass" "$job" "$name" "$status"
  if [[ $status != ok ]]; then
    FAILED=$((FAILED + 1))
    note "$tag: $status (logs: $OUT/fio/$tag.log, $OUT/logs/$name.log)"
    tail -n 5 "$WORK/logs/$name.log" "$OUT/fio/$tag.log" 2>/dev/null >&2 || true
  fi
}

# ---------------------------------------------------------------------------

main() {
  while (($#)); do
    case $1 in
      --quick)     RUNTIME=2 RAMP=1 PASSES=1 ;;
      --only)      ONLY=${2?}; shift ;;
      --workloads) WORKLOADS=${2?}; shift ;;
      --runtime)   RUNTIME=${2?}; shift ;;
      --ramp)      RAMP=${2?}; shift ;;
      --passes)    PASSES=${2?}; shift ;;
      --size)      SIZE=${2?}; shift ;;
      --dir)       DIR=${2?}; shift ;;
      --out)       OUT=${2?}; shift ;;
      --keep)      KEEP=1 ;;
      --list)      LIST=1 ;;
      -h|--help)   usage; exit 0 ;;
      *)           usage >&2; exit 2 ;;
    esac
    shift
  done
  local n
  for n in "$RUNTIME" "$RAMP" "$PASSES"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "bench.sh: not a number: $n" >&2; exit 2; }
  done
  ((RUNTIME > 0 && PASSES > 0)) || { echo "bench.sh: --runtime and --passes must be > 0" >&2; exit 2; }
  local bytes
  bytes=$(numfmt --from=iec "$SIZE" 2>/dev/null) \
    || { echo "bench.sh: bad --size: $SIZE" >&2; exit 2; }

  # Selection.
  local -a servers=() jobs=()
  local name kind base targets params job
  while read -r name kind base targets params; do
    [[ -z $ONLY || $name =~ $ONLY ]] && servers+=("$name")
  done < <(server_table)
  while read -r job _; do
    [[ -z $WORKLOADS || $job =~ $WORKLOADS ]] && jobs+=("$job")
  done < <(workload_table)
  if ((LIST)); then
    echo "servers (name kind baseline targets parameters):"
    server_table | sed 's/^/  /'
    echo "workloads (job label unit):"
    workload_table | sed 's/^/  /'
    echo "selected: ${servers[*]:-none} / ${jobs[*]:-none}"
    exit 0
  fi
  ((${#servers[@]})) || { echo "bench.sh: --only '$ONLY' selects no server (--list)" >&2; exit 2; }
  ((${#jobs[@]})) || { echo "bench.sh: --workloads '$WORKLOADS' selects no job" >&2; exit 2; }

  # Requirements.
  local tool
  for tool in fio nbdkit nbdinfo qemu-storage-daemon numfmt timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
  [[ -x $PY ]] || die "$PY not found (the report needs it)"
  for job in "${jobs[@]}"; do
    [[ -r $HERE/$job.fio ]] || die "missing $HERE/$job.fio"
  done
  if printf '%s\n' "${servers[@]}" | grep -q '^hablock'; then
    [[ -r $PLUGIN ]] || die "no hablock plugin at $PLUGIN (build it, set HABLOCK_PLUGIN, or --only 'nbdkit-file|qsd')"
  fi

  [[ -n $OUT ]] || OUT=/var/tmp/hablock-bench-results/$(date +%Y%m%d-%H%M%S)
  mkdir -p "$OUT/fio" || die "cannot create $OUT"
  : >"$OUT/runs.tsv"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  WORK=$(mktemp -d "$DIR/hablock-bench.XXXXXX") || die "cannot create a directory in $DIR"
  mkdir "$WORK/logs"
  DISK=$WORK/disk.img
  # One build for the whole run, even if the tree is rebuilt meanwhile.
  if [[ -r $PLUGIN ]]; then
    cp "$PLUGIN" "$WORK/nbdkit-hablock-plugin.so"
    PLUGIN_COPY=$WORK/nbdkit-hablock-plugin.so
  fi

  # What the report needs to know.
  server_table | awk '{n=$1; k=$2; b=$3; t=$4; $1=$2=$3=$4=""; sub(/^ +/,""); print n "\t" k "\t" b "\t" t "\t" $0}' \
    >"$OUT/servers.tsv"
  workload_table | awk '{print $1 "\t" $2 "\t" $3}' >"$OUT/workloads.tsv"
  target_table | awk '{print $1 "\t" $2 "\t" $3 "\t" $4 "\t" $5}' >"$OUT/targets.tsv"

  local fstype runs est
  fstype=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || echo '?')
  [[ $fstype == ext4 ]] || note "warning: $DIR is $fstype, not ext4"
  runs=$((PASSES * ${#jobs[@]} * ${#servers[@]}))
  est=$(((runs * (RUNTIME + RAMP + 2) + 59) / 60))
  {
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'host\t%s, %s CPUs, %s GiB RAM, kernel %s\n' "$(hostname)" "$(nproc)" \
      "$(awk '/MemTotal/{printf "%d", $2/1048576}' /proc/meminfo)" "$(uname -r)"
    printf 'tools\t%s, nbdkit %s, %s\n' "$(fio --version)" \
      "$(nbdkit --version | awk '{print $2}')" \
      "$(qemu-storage-daemon --version | head -1 | awk '{print "qemu-storage-daemon " $3}')"
    printf 'plugin\t%s (built %s; tree %s), copied at start\n' "$PLUGIN" \
      "$(date -u -r "$PLUGIN" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')" \
      "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo 'no commit')"
    printf 'transport\tUnix sockets (nbd+unix), client and servers on this host\n'
    printf 'backing\t%s (%s bytes) file fully written with random data, %s on %s, synced, evicted from and read into the page cache before every run\n' \
      "$SIZE" "$bytes" "$fstype" "$DIR"
    printf 'runs\tpasses: %s, workloads: %s, servers: %s; %ss measured after %ss ramp; a fresh server per run; server order reversed on even passes\n' \
      "$PASSES" "${#jobs[@]}" "${#servers[@]}" "$RUNTIME" "$RAMP"
    printf 'load_before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$OUT/meta.tsv"

  echo "hablock bench: ${#servers[@]} servers, ${#jobs[@]} workloads, $PASSES passes: $runs runs, about $est min"
  echo "servers over Unix sockets; backing file $DISK ($SIZE, $fstype); results in $OUT"
  make_backing "$DISK" "$bytes"

  FAILED=0
  local pass i order=()
  for ((pass = 1; pass <= PASSES; pass++)); do
    order=()
    if ((pass % 2)); then order=("${servers[@]}")
    else for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
    fi
    for job in "${jobs[@]}"; do
      for name in "${order[@]}"; do
        read -r _ kind base targets params < <(server_table | awk -v n="$name" '$1 == n')
        run_one "$pass" "$job" "$name" "$kind" "$params"
      done
    done
  done
  printf 'load_after\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.tsv"

  report "$OUT" || die "report failed"
  echo
  echo "results: $OUT (table.txt, table.md, summary.tsv, summary.json, results.tsv, fio/)"
  if ((FAILED)); then
    note "$FAILED run(s) failed"
    exit 1
  fi
}

# ---------------------------------------------------------------------------
# The report: per-run metrics from fio's JSON, medians over the passes,
# ratios to each server's baseline, target checks. Writes results.tsv,
# summary.tsv, summary.json, table.txt, table.md; prints table.txt.

report() {
  "$PY" - "$1" <<'PYEOF'
import json, os, statistics, sys

out = sys.argv[1]

def tsv(name):
    with open(os.path.join(out, name)) as f:
        return [l.rstrip("\n").split("\t") for l in f if l.strip()]

meta = dict((r[0], r[1]) for r in tsv("meta.tsv"))
servers = [dict(name=r[0], kind=r[1], baseline=r[2], targets=r[3], params=r[4])
           for r in tsv("servers.tsv")]
workloads = [dict(job=r[0], label=r[1].replace("-", " "), unit=r[2])
             for r in tsv("workloads.tsv")]
targets = [dict(cls=r[0], job=r[1], metric=r[2], op=r[3], value=float(r[4]))
           for r in tsv("targets.tsv")]
runs = tsv("runs.tsv")

def load_fio(path):
    # Lenient: skip any text before the JSON object (a log line of the engine).
    with open(path) as f:
        text = f.read()
    return json.loads(text[text.index("{"):])

def pct(lat, p):
    return (lat.get("percentile") or {}).get(p, 0) / 1000.0

def metrics(path):
    job = load_fio(path)["jobs"][0]
    if job.get("error"):
        raise ValueError("fio error %d" % job["error"])
    d = job["read"] if job["read"]["io_bytes"] > job["write"]["io_bytes"] else job["write"]
    m = dict(iops=d["iops"], mbps=d["bw_bytes"] / 1e6,
             clat_mean=d["clat_ns"]["mean"] / 1000.0,
             clat_p50=pct(d["clat_ns"], "50.000000"),
             clat_p99=pct(d["clat_ns"], "99.000000"))
    s = job.get("sync", {}).get("lat_ns")
    if s and s.get("N"):
        m["flush_mean"] = s["mean"] / 1000.0
        m["flush_p50"] = pct(s, "50.000000")
    return m

# Per run.
per = {}   # (job, server) -> list of metric dicts
keys = ["iops", "mbps", "clat_mean", "clat_p50", "clat_p99", "flush_mean", "flush_p50"]
with open(os.path.join(out, "results.tsv"), "w") as f:
    f.write("pass\tjob\tserver\tstatus\t" + "\t".join(keys) + "\n")
    for p, job, srv, status, path in runs:
        m = None
        if status == "ok":
            try:
                m = metrics(path)
            except (OSError, ValueError, KeyError, IndexError) as e:
                status = "bad-json: %s" % e
        if m:
            per.setdefault((job, srv), []).append(m)
        f.write("\t".join([p, job, srv, status] +
                          ["%.3f" % m[k] if m and k in m else "" for k in keys]) + "\n")

def med(job, srv):
    ms = per.get((job, srv))
    if not ms:
        return None
    r = {k: statistics.median([m[k] for m in ms]) for k in keys if k in ms[0]}
    w = next(w for w in workloads if w["job"] == job)
    thr = [m[w["unit"]] for m in ms]
    r["thr"] = statistics.median(thr)
    r["spread"] = (max(thr) - min(thr)) / r["thr"] if r["thr"] else 0.0
    r["n"] = len(ms)
    return r

sel_servers = [s for s in servers if any(r[2] == s["name"] for r in runs)]
sel_jobs = [w for w in workloads if any(r[1] == w["job"] for r in runs)]
summary = []
S = {}
for w in sel_jobs:
    for s in sel_servers:
        r = med(w["job"], s["name"])
        S[(w["job"], s["name"])] = r
for w in sel_jobs:
    for s in sel_servers:
        r = S[(w["job"], s["name"])]
        b = S.get((w["job"], s["baseline"]))
        row = dict(job=w["job"], server=s["name"], baseline=s["baseline"],
                   unit=w["unit"], median=r)
        if r and b and b["thr"] and r["thr"]:
            row["ratio_thr"] = r["thr"] / b["thr"]
            row["ratio_lat"] = r["clat_mean"] / b["clat_mean"] if b["clat_mean"] else None
            row["ratio_cycle"] = b["thr"] / r["thr"]
            if r.get("flush_mean") and b.get("flush_mean"):
                row["ratio_flush"] = r["flush_mean"] / b["flush_mean"]
        summary.append(row)

def ratio(job, srv, metric):
    for row in summary:
        if row["job"] == job and row["server"] == srv:
            return row.get("ratio_" + metric)
    return None

checks = []
for s in sel_servers:
    for t in targets:
        if t["cls"] != s["targets"] or not any(w["job"] == t["job"] for w in sel_jobs):
            continue
        v = ratio(t["job"], s["name"], t["metric"])
        ok = None if v is None else (v >= t["value"] if t["op"] == ">=" else v <= t["value"])
        checks.append(dict(server=s["name"], baseline=s["baseline"], job=t["job"],
                           metric=t["metric"], op=t["op"], target=t["value"],
                           value=v, ok=ok))

# Machine-readable.
with open(os.path.join(out, "summary.tsv"), "w") as f:
    cols = ["thr", "spread", "n"] + keys
    f.write("job\tserver\tunit\t" + "\t".join(cols) +
            "\tbaseline\tratio_thr\tratio_lat\tratio_cycle\tratio_flush\n")
    for row in summary:
        r = row["median"] or {}
        f.write("\t".join([row["job"], row["server"], row["unit"]] +
                          ["%.3f" % r[c] if c in r else "" for c in cols] +
                          [row["baseline"]] +
                          ["%.4f" % row[c] if row.get(c) is not None else ""
                           for c in ("ratio_thr", "ratio_lat", "ratio_cycle",
                                     "ratio_flush")]) + "\n")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(dict(meta=meta, servers=sel_servers, workloads=sel_jobs,
                   summary=summary, targets=checks), f, indent=1)
    f.write("\n")

# Human-readable. A table is (head, body, align): align has one letter per
# column, l or r.
def fnum(v, unit=None):
    if v is None:
        return "-"
    if unit in ("iops", "mbps"):
        return "{:,.0f}".format(v)
    return "%.1f" % v if v < 100 else "%.0f" % v

def fx(v):
    return "-" if v is None else "%.2fx" % v

def workload_table(w):
    flush = any((S[(w["job"], s["name"])] or {}).get("flush_mean") is not None
                for s in sel_servers)
    head = ["server", "IOPS" if w["unit"] == "iops" else "MB/s", "spread",
            "clat mean us", "p50 us", "p99 us"]
    if flush:
        head += ["flush mean us", "flush p50 us"]
    head += ["ratio", "to"]
    body = []
    for s in sel_servers:
        r = S[(w["job"], s["name"])]
        row = next(x for x in summary if x["job"] == w["job"] and x["server"] == s["name"])
        if r is None:
            body.append([s["name"], "failed"] + ["-"] * (len(head) - 2))
            continue
        spread = "%.0f%%" % (100 * r["spread"]) if r["n"] > 1 else "-"
        cells = [s["name"], fnum(r["thr"], w["unit"]), spread,
                 fnum(r["clat_mean"]), fnum(r["clat_p50"]), fnum(r["clat_p99"])]
        if flush:
            cells += [fnum(r.get("flush_mean")), fnum(r.get("flush_p50"))]
        if s["baseline"] == "-":
            cells += ["", ""]
        elif row.get("ratio_thr") is None:
            cells += ["no baseline", s["baseline"]]
        else:
            txt = fx(row["ratio_thr"])
            if row.get("ratio_flush") is not None:
                txt += ", flush " + fx(row["ratio_flush"])
            elif w["job"].endswith("qd1"):
                txt += ", lat " + fx(row["ratio_lat"])
            cells += [txt, s["baseline"]]
        body.append(cells)
    return head, body, "l" + "r" * (len(head) - 3) + "ll"

ratio_servers = [s for s in sel_servers if s["baseline"] != "-"]

def ratio_table():
    head = ["server", "to"] + [w["label"] for w in sel_jobs]
    body = [[s["name"], s["baseline"]] +
            [fx(ratio(w["job"], s["name"], "thr")) for w in sel_jobs]
            for s in ratio_servers]
    return head, body, "ll" + "r" * len(sel_jobs)

def targets_table():
    what = {"thr": "throughput", "lat": "mean latency", "cycle": "write+flush cycle"}
    verdict = {True: "ok", False: "MISSED", None: "n/a"}
    body = [[c["server"], c["job"],
             "%s %s %.2fx %s" % (what[c["metric"]], c["op"], c["target"], c["baseline"]),
             fx(c["value"]), verdict[c["ok"]]] for c in checks]
    return ["server", "job", "target", "measured", "verdict"], body, "lllrl"

def text_table(head, body, align):
    wid = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  " + "  ".join(c.ljust(wid[i]) if align[i] == "l" else c.rjust(wid[i])
                                      for i, c in enumerate(r)).rstrip()
                     for r in [head] + body)

def md_table(head, body, align):
    rule = ["---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, rule] + body)

lines = ["hablock benchmark, %s" % meta.get("date", "?")]
for k in ("host", "tools", "transport", "backing", "runs", "plugin"):
    lines.append("  %-10s %s" % (k + ":", meta.get(k, "?")))
lines.append("  %-10s before %s, after %s" % ("load:", meta.get("load_before", "?"),
                                               meta.get("load_after", "?")))
lines.append("  medians over the passes; spread = (max - min) / median throughput;")
lines.append("  ratio = server / baseline throughput; lat, flush = mean completion latency")
lines.append("  ratio of the writes, of the flushes (lower is better)")
md = ["Run of %s: %s; %s." % (meta.get("date", "?"), meta.get("host", "?"), meta.get("tools", "?")),
      "%s; %s; %s. Load average before %s, after %s." % (
          meta.get("transport", "?"), meta.get("backing", "?"), meta.get("runs", "?"),
          meta.get("load_before", "?"), meta.get("load_after", "?")),
      "Medians over the passes; latencies are fio completion latencies in microseconds; "
      "*spread* is (max - min) / median of the throughput; *ratio* is server / baseline "
      "throughput, *lat* and *flush* the mean latency ratios of the writes and of the "
      "flushes (lower is better)."]
sections = [("%s  [%s.fio]" % (w["label"], w["job"]),
             "%s (`%s.fio`)" % (w["label"], w["job"]), workload_table(w)) for w in sel_jobs]
if ratio_servers:
    sections.append(("Throughput ratios (server / baseline)",) * 2 + (ratio_table(),))
if checks:
    sections.append(("Targets",) * 2 + (targets_table(),))
for title, md_title, t in sections:
    lines += ["", title, text_table(*t)]
    md += ["", "### " + md_title, "", md_table(*t)]
txt = "\n".join(lines) + "\n"
with open(os.path.join(out, "table.txt"), "w") as f:
    f.write(txt)
with open(os.path.join(out, "table.md"), "w") as f:
    f.write("\n".join(md) + "\n")

sys.stdout.write(txt)
PYEOF
}

main "$@"
