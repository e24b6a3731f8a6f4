# Sourced by scripts/images.sh and meta-tests/containerd/build-pause.sh: OCI image-layout
# tarballs by hand, deterministic (fixed mtimes, owners and order), for `ctr images import`.
# Callers define log() (progress on stderr).

det_tar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "$@"; }

# oci_image NAME ROOTFS OUT CONFIG_JSON: packs ROOTFS into an image-layout tarball OUT.
oci_image() {
    local name="$1" rootfs="$2" out="$3" config="$4" work
    work="$(mktemp -d /var/tmp/meta-cni-image.XXXXXX)"
    mkdir -p "$work/layout/blobs/sha256"
    blob() {
        local d s
        d="$(sha256sum "$1" | cut -d' ' -f1)"
        s="$(stat -c %s "$1")"
        mv "$1" "$work/layout/blobs/sha256/$d"
        echo "$d $s"
    }
    (cd "$rootfs" && det_tar -cf "$work/layer.tar" .)
    read -r ld ls < <(blob "$work/layer.tar")
    printf '%s' '{"architecture":"amd64","os":"linux","config":'"$config"','\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$ld"'"]},'\
'"history":[{"created_by":"scripts/lib/oci-image.sh (meta-cni)"}]}' >"$work/config.json"
    read -r cd cs < <(blob "$work/config.json")
    printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$cd"'","size":'"$cs"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'"$ld"'","size":'"$ls"'}]}' \
        >"$work/manifest.json"
    read -r md ms < <(blob "$work/manifest.json")
    printf '%s' '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"digest":"sha256:'"$md"'","size":'"$ms"',"platform":{"architecture":"amd64","os":"linux"},'\
'"annotations":{"io.containerd.image.name":"'"$name"'","org.opencontainers.image.ref.name":"'"${name##*:}"'"}}]}' \
        >"$work/layout/index.json"
    printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
    mkdir -p "$(dirname "$out")"
    det_tar -C "$work/layout" -cf "$out.tmp" blobs index.json oci-layout
    mv "$out.tmp" "$out"
    rm -rf "$work"
    log "built $out: $name, manifest sha256:$md"
}
