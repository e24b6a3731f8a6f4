#!/bin/bash
# Manual smoke test for libcni-driver with the Debian reference plugins
# (bridge + tuning).  Needs root.  Network safety: the driver (and thus the
# bridge plugin, which creates its bridge in the *caller's* namespace) runs
# inside a throw-away "node" netns; the pod is a second throw-away netns.
# Nothing is done in the root namespace.  Everything is removed on exit.
#
#   meta-tests/libcni-driver/smoke.sh [DRIVER_BINARY]   (default: build into tmp dir)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
plugins=${CNI_PLUGIN_DIR:-/usr/lib/cni}
node=lcd-node-$$
pod=lcd-test-$$
tmp=$(mktemp -d /tmp/lcd-smoke.XXXXXX)

cleanup() {
    set +e
    ip netns del "$pod" 2>/dev/null
    ip netns del "$node" 2>/dev/null   # removes lcdbr0 and veths with it
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

driver=${1:-}
if [ -z "$driver" ]; then
    driver=$("$here/build.sh" "$tmp/libcni-driver")
fi

ip netns add "$node"
ip netns add "$pod"
ip -n "$node" link set lo up

mac=c2:11:22:33:44:55
cat >"$tmp/net.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "lcdnet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "lcdbr0",
      "isGateway": true,
      "ipam": {
        "type": "host-local",
        "subnet": "10.99.0.0/24",
        "dataDir": "$tmp/ipam"
      }
    },
    {
      "type": "tuning",
      "mtu": 1400,
      "capabilities": { "mac": true }
    }
  ]
}
JSON

cache=$tmp/cache
common=(--conflist "$tmp/net.conflist" --netns "/run/netns/$pod"
        --container-id "ctr-$$" --ifname eth0 --bin-dir "$plugins"
        --cache-dir "$cache" --args "IgnoreUnknown=1;K8S_POD_NAME=smoke")
run() { nsenter --net="/run/netns/$node" "$driver" "$@"; }
cachefile=$cache/results/lcdnet-ctr-$$-eth0

step version
run version --conflist "$tmp/net.conflist" --bin-dir "$plugins" | tee "$tmp/version.json"
grep -q '"1.0.0"' "$tmp/version.json" || fail "bridge does not report 1.0.0"

step validate
run validate --conflist "$tmp/net.conflist" --bin-dir "$plugins"

step add
run add "${common[@]}" --cap-args "{\"mac\":\"$mac\"}" | tee "$tmp/add.json"
[ "$(jq -r .cniVersion "$tmp/add.json")" = 1.0.0 ] || fail "result cniVersion"
jq -e '.ips[0].address | startswith("10.99.0.")' "$tmp/add.json" >/dev/null || fail "no 10.99.0.x IP"
[ -f "$cachefile" ] || fail "libcni cache file $cachefile missing after ADD"
ip -n "$pod" -o link show eth0 | grep -q "mtu 1400" || fail "tuning mtu not applied"
ip -n "$pod" -o link show eth0 | grep -qi "$mac" || fail "cap-arg mac not applied"
ip -n "$pod" -o addr show eth0 | grep -q "10.99.0." || fail "no IP in pod"
ip -n "$node" -o addr show lcdbr0 | grep -q "10.99.0.1/24" || fail "bridge gateway IP missing"
jq -e '.cniArgs | length == 2' "$cachefile" >/dev/null || fail "CNI args not in cache"

step check
out=$(run check "${common[@]}"); echo "$out"
[ "$out" = '{"ok":true}' ] || fail "check output"

step "check detects drift (pod eth0 mtu changed -> exit 1)"
ip -n "$pod" link set eth0 mtu 1500
if run check "${common[@]}"; then fail "check should fail after mtu drift"; fi
ip -n "$pod" link set eth0 mtu 1400

step cached
run cached "${common[@]}" | tee "$tmp/cached.json"
[ "$(jq -c .ips "$tmp/cached.json")" = "$(jq -c .ips "$tmp/add.json")" ] || fail "cached result differs from ADD result"

step "error path (bad netns -> CNI error JSON on stdout, exit 1)"
set +e
run add --conflist "$tmp/net.conflist" --netns /run/netns/does-not-exist-$$ \
    --container-id "bad-$$" --ifname eth0 --bin-dir "$plugins" --cache-dir "$cache" \
    >"$tmp/err.json" 2>"$tmp/err.txt"
rc=$?
set -e
cat "$tmp/err.json"; cat "$tmp/err.txt"
[ $rc -eq 1 ] || fail "expected exit 1, got $rc"
jq -e '.code and .msg' "$tmp/err.json" >/dev/null || fail "no CNI error JSON"

step del
run del "${common[@]}"
[ ! -e "$cachefile" ] || fail "cache file still present after DEL"
[ "$(run cached "${common[@]}")" = null ] || fail "cached should be null after DEL"
! ip -n "$pod" link show eth0 >/dev/null 2>&1 || fail "eth0 still in pod"

step "del again (idempotent)"
run del "${common[@]}"

echo "PASS"
