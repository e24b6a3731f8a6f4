# Rewrites a vendor/modules.txt written by Go 1.15 (Kubernetes 1.20) so that Go >= 1.17
# accepts it with -mod=vendor.
#
# Go 1.15 wrote each module as a versioned header `# path version [=> repl]` plus, for
# replaced modules, a wildcard-replacement header `# path => repl`, and package lines
# could end up after any header (even another module's wildcard header). Go >= 1.17
# attributes a package to the header right above it, so such packages belong to a
# "module without a version" and vendor consistency checks fail. Here each package is
# attributed to the module that really provides it (the longest versioned module path that
# is a prefix of the package path), and every module is emitted as: versioned header, its
# `##` annotations, its packages, then its wildcard header. Modules keep the order of
# their first appearance; no line is added or dropped.
{ lines[NR] = $0 }
/^# / {
    path = $2
    if (!(path in seen)) { seen[path] = 1; order[++n] = path }
    if ($3 == "=>") { wild[path] = $0; hdr = "w" } else { ver[path] = $0; hdr = "v" }
    cur = path
    next
}
/^## / {
    if (hdr == "v") vann[cur] = vann[cur] $0 "\n"; else wann[cur] = wann[cur] $0 "\n"
    next
}
NF == 1 {
    if (cur == "") { print "reorder-modules-txt: package before any module: " $0 > "/dev/stderr"; bad = 1; exit 2 }
    npk++; pk[npk] = $0; pos[npk] = cur
    next
}
NF == 0 { next }
{ print "reorder-modules-txt: unexpected line " NR ": " $0 > "/dev/stderr"; bad = 1; exit 2 }
END {
    if (bad) exit 2
    for (i = 1; i <= npk; i++) {
        p = pk[i]; best = ""
        for (m in ver) {
            if ((p == m || index(p, m "/") == 1) && length(m) > length(best)) best = m
        }
        if (best == "") best = pos[i]
        pkgs[best] = pkgs[best] p "\n"
    }
    for (i = 1; i <= n; i++) {
        p = order[i]
        if (p in ver) {
            print ver[p]; printf "%s", vann[p]; printf "%s", pkgs[p]
            if (p in wild) { print wild[p]; printf "%s", wann[p] }
        } else {
            # Only a wildcard header (a replaced module outside the build list).
            print wild[p]; printf "%s", wann[p]; printf "%s", pkgs[p]
        }
    }
}
