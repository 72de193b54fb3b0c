# Shared by run-system-tests and run-package-test: boots systemd as PID 1 of private
# PID, mount, UTS and IPC namespaces over an overlay of / (boot-in-namespace), and
# runs checks against it. Sourced; the caller sets `stage` (files copied into the
# root) and `work` (a scratch directory), and may set KEYD_HIDE (directories an empty
# tmpfs is mounted over, e.g. /opt/swift).

skip() { echo "$SUITE skipped: $*"; exit 0; }

# Skips (exit 0, saying why) unless this machine can run the tests.
require_namespaces() {
  [ "$(id -u)" = 0 ] || skip "they need root (to boot systemd in namespaces)"
  local tool
  for tool in unshare nsenter "$@"; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
  done
  [ -x /lib/systemd/systemd ] || skip "/lib/systemd/systemd is not installed (apt-get install systemd)"
  unshare --pid --mount --fork true 2>/dev/null || skip "this machine does not allow new PID and mount namespaces"
}

# Boots the systemd and waits until it is running; sets `pid`, removes $work at exit.
boot_systemd() {
  unshare --pid --mount --uts --ipc --fork --propagation private Tests/system/boot-in-namespace "$stage" "$work/root" \
    >"$work/systemd.log" 2>&1 &
  unshare_pid=$!
  pid=""
  for _ in $(seq 100); do
    pid=$(pgrep -P "$unshare_pid" | head -1)
    [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = systemd ] && break
    sleep 0.1
  done
  trap cleanup EXIT
  local state=""
  for _ in $(seq 120); do
    state=$(ns systemctl is-system-running 2>/dev/null)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 0.25
  done
  echo "FAIL: systemd did not come up ($state; pid $pid)"; tail -30 "$work/systemd.log"; exit 1
}
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  wait "$unshare_pid" 2>/dev/null
  rm -rf "$work"
}
ns() { nsenter -t "$pid" -m -p -u -i "$@"; }

failures=0
passed=0
check() {  # check "what" command…
  local what="$1"; shift
  if out=$("$@" 2>&1); then
    echo "ok - $what"; passed=$((passed + 1))
  else
    echo "FAIL - $what"; echo "$out" | sed 's/^/    /' | tail -15; failures=$((failures + 1))
  fi
}

# The manual pages render, bash-completion finds and uses the completion, and both
# programs in $BIN print the same version with the build's revision.
t_installed_docs() {
  local page; page=$(ns env MANWIDTH=100 man -P cat recotap-keyd.yaml 2>&1)
  echo "$page" | grep -q "metrics.listen" || { echo "man recotap-keyd.yaml:"; echo "$page" | head -5; return 1; }
  echo "$page" | grep -q "RECOTAP_KEYD_CHECK_INTERVAL" || { echo "man recotap-keyd.yaml lacks RECOTAP_KEYD_CHECK_INTERVAL"; return 1; }
  page=$(ns env MANWIDTH=100 man -P cat 8 recotap-keyd 2>&1)
  echo "$page" | grep -q -- "--check-config" || { echo "man 8 recotap-keyd:"; echo "$page" | head -5; return 1; }
  page=$(ns env MANWIDTH=100 man -P cat recotap-keyctl 2>&1)
  echo "$page" | grep -q "rotate" || { echo "man recotap-keyctl:"; echo "$page" | head -5; return 1; }
  # Each installed page, as found by man (gzipped from the package), is lint-clean.
  local name file lint
  for name in "5 recotap-keyd.yaml" "8 recotap-keyd" "1 recotap-keyctl"; do
    file=$(ns man -w $name) || { echo "man -w $name finds no page"; return 1; }
    lint=$(ns mandoc -T lint "$file" 2>&1)
    [ -z "$lint" ] || { echo "mandoc -T lint $file:"; echo "$lint"; return 1; }
  done
  local spec; spec=$(ns bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader recotap-keyctl; complete -p recotap-keyctl' 2>&1)
  echo "$spec" | grep -q "recotap-keyctl$" || { echo "bash-completion finds no completion: $spec"; return 1; }
  local words; words=$(ns bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader recotap-keyctl
    COMP_WORDS=(recotap-keyctl ro); COMP_CWORD=1; COMP_LINE="recotap-keyctl ro"; COMP_POINT=${#COMP_LINE}
    $(complete -p recotap-keyctl | sed -n "s/.*-F \([^ ]*\).*/\1/p") recotap-keyctl ro recotap-keyctl; printf "%s\n" "${COMPREPLY[@]}"' 2>&1)
  echo "$words" | grep -qx "rotate" || { echo "completing 'recotap-keyctl ro' gave: $words"; return 1; }
  [ "$(ns $BIN/recotap-keyd --version)" = "$(ns $BIN/recotap-keyctl --version)" ] || { echo "versions differ"; return 1; }
  ns $BIN/recotap-keyd --version | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+ \(git ([0-9a-f]{7,}(-dirty)?|unknown)\)$' || { echo "--version: $(ns $BIN/recotap-keyd --version)"; return 1; }
}
