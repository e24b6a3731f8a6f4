// libcni-driver drives CNI plugins through the real libcni library
// (github.com/containernetworking/cni/libcni, Debian's 1.1.2 build) so that
// meta-cni integration tests can exercise plugins exactly like a Go
// container runtime would (config injection, prevResult chaining, result
// cache handling, version negotiation).
//
// Usage:
//
//	libcni-driver <add|check|del|cached|version|validate> --conflist FILE
//	    --netns PATH --container-id ID --ifname NAME --bin-dir DIR[:DIR...]
//	    --cache-dir DIR [--args K=V;K2=V2] [--cap-args JSON]
//
// Exit status: 0 on success, 1 on a libcni/plugin error (message on stderr;
// if the error is a CNI *types.Error its JSON is printed on stdout), 2 on a
// usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const usage = `usage: libcni-driver <add|check|del|cached|version|validate> --conflist FILE --netns PATH --container-id ID --ifname NAME --bin-dir DIR[:DIR...] --cache-dir DIR [--args K=V;K2=V2] [--cap-args JSON]`

type options struct {
	conflist    string
	netns       string
	containerID string
	ifname      string
	binDir      string
	cacheDir    string
	args        string
	capArgs     string
}

func usageErr(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "libcni-driver: "+format+"\n", a...)
	fmt.Fprintln(os.Stderr, usage)
	os.Exit(2)
}

// fail prints err to stderr and, if it is (or wraps) a CNI *types.Error, its
// JSON form to stdout; then exits 1.
func fail(err error) {
	fmt.Fprintf(os.Stderr, "libcni-driver: %v\n", err)
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		if b, mErr := json.Marshal(cniErr); mErr == nil {
			fmt.Fprintln(os.Stdout, string(b))
		}
	}
	os.Exit(1)
}

func printJSON(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail(fmt.Errorf("marshal output: %w", err))
	}
	fmt.Fprintln(os.Stdout, string(b))
}

// parseArgs turns "K=V;K2=V2" into libcni's [][2]string (order preserved).
func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		parts := strings.SplitN(kv, "=", 2)
		if len(parts) != 2 || parts[0] == "" {
			return nil, fmt.Errorf("invalid --args entry %q (want K=V)", kv)
		}
		out = append(out, [2]string{parts[0], parts[1]})
	}
	return out, nil
}

func splitPath(s string) []string {
	var out []string
	for _, d := range filepath.SplitList(s) {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, usage)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		os.Exit(0)
	}
	cmd := os.Args[1]
	switch cmd {
	case "add", "check", "del", "cached", "version", "validate":
	case "gc", "status":
		usageErr("%q is not supported by libcni 1.1.2 (GC/STATUS need libcni >= 1.2)", cmd)
	default:
		usageErr("unknown command %q", cmd)
	}

	var o options
	fs := flag.NewFlagSet("libcni-driver "+cmd, flag.ContinueOnError)
	fs.SetOutput(ioutil.Discard) // errors are reported by usageErr
	fs.StringVar(&o.conflist, "conflist", "", "network configuration list file (.conflist JSON)")
	fs.StringVar(&o.netns, "netns", "", "path of the container network namespace")
	fs.StringVar(&o.containerID, "container-id", "", "container ID")
	fs.StringVar(&o.ifname, "ifname", "", "interface name inside the container")
	fs.StringVar(&o.binDir, "bin-dir", "", "plugin search path, ':'-separated")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "libcni cache directory")
	fs.StringVar(&o.args, "args", "", "CNI_ARGS as K=V;K2=V2")
	fs.StringVar(&o.capArgs, "cap-args", "", "capability args as a JSON object")
	if err := fs.Parse(os.Args[2:]); err != nil {
		usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		usageErr("unexpected arguments: %v", fs.Args())
	}

	need := func(name, val string) {
		if val == "" {
			usageErr("--%s is required for %q", name, cmd)
		}
	}
	need("conflist", o.conflist)
	need("bin-dir", o.binDir)

	data, err := ioutil.ReadFile(o.conflist)
	if err != nil {
		fail(fmt.Errorf("read conflist: %w", err))
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		fail(fmt.Errorf("parse conflist %s: %w", o.conflist, err))
	}

	cninet := libcni.NewCNIConfigWithCacheDir(splitPath(o.binDir), o.cacheDir, nil)
	ctx := context.Background()

	switch cmd {
	case "version":
		if len(list.Plugins) == 0 {
			fail(errors.New("conflist has no plugins"))
		}
		info, err := cninet.GetVersionInfo(ctx, list.Plugins[0].Network.Type)
		if err != nil {
			fail(err)
		}
		// Encode writes {"cniVersion":..,"supportedVersions":[..]}
		if err := info.Encode(os.Stdout); err != nil {
			fail(err)
		}
		return
	case "validate":
		caps, err := cninet.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		if caps == nil {
			caps = []string{}
		}
		printJSON(map[string]interface{}{"ok": true, "capabilities": caps})
		return
	}

	need("container-id", o.containerID)
	need("ifname", o.ifname)
	need("cache-dir", o.cacheDir)
	if cmd != "cached" {
		need("netns", o.netns)
	}

	rt := &libcni.RuntimeConf{
		ContainerID: o.containerID,
		NetNS:       o.netns,
		IfName:      o.ifname,
	}
	if rt.Args, err = parseArgs(o.args); err != nil {
		usageErr("%v", err)
	}
	if o.capArgs != "" {
		caps := map[string]interface{}{}
		if err := json.Unmarshal([]byte(o.capArgs), &caps); err != nil {
			usageErr("--cap-args must be a JSON object: %v", err)
		}
		rt.CapabilityArgs = caps
	}

	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		printJSON(result)
	case "check":
		if err := cninet.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		printJSON(map[string]bool{"ok": true})
	case "del":
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		printJSON(map[string]bool{"ok": true})
	case "cached":
		// libcni returns (nil, nil) when no cache entry exists: print null.
		result, err := cninet.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail(err)
		}
		if result == nil {
			fmt.Fprintln(os.Stdout, "null")
			return
		}
		printJSON(result)
	}
}
