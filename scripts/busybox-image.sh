#!/usr/bin/env bash
# Builds a small OCI image from busybox-static (Debian package `busybox-static`), for tests,
# benchmarks and trying `brim run --image`:
#   scripts/busybox-image.sh OUT_DIR            -> OUT_DIR is an OCI image layout directory
#   scripts/busybox-image.sh --docker OUT.tar   -> a `docker save` archive of the same image
# One gzip'd layer: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group, /tmp,
# and /etc/brim-image (a marker the tests look for). Needs tar, gzip, sha256sum.
set -euo pipefail

docker=0
if [ "${1:-}" = "--docker" ]; then docker=1; shift; fi
out=${1:?usage: busybox-image.sh [--docker] OUT}
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "busybox not found at $bb: apt-get install busybox-static" >&2; exit 1; }
case "$(uname -m)" in x86_64) arch=amd64;; aarch64) arch=arm64;; *) arch=$(uname -m);; esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root="$tmp/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "brim busybox image" > "$root/etc/brim-image"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$tmp/layer.tar" .
diff_id=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
gzip -n -c "$tmp/layer.tar" > "$tmp/layer.tar.gz"

config=$(printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$diff_id")

if [ "$docker" = 1 ]; then
  d="$tmp/docker"
  mkdir -p "$d/layer"
  cp "$tmp/layer.tar" "$d/layer/layer.tar"
  printf '%s' "$config" > "$d/config.json"
  printf '[{"Config":"config.json","RepoTags":["brim/busybox:latest"],"Layers":["layer/layer.tar"]}]' > "$d/manifest.json"
  tar --owner=0 --group=0 -C "$d" -cf "$out" manifest.json config.json layer
  exit 0
fi

mkdir -p "$out/blobs/sha256"
put() { # file -> prints "digest size"
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$out/blobs/sha256/$d"
  echo "$d $s"
}
printf '%s' "$config" > "$tmp/config.json"
read -r cd cs < <(put "$tmp/config.json")
read -r ld ls < <(put "$tmp/layer.tar.gz")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$cd" "$cs" "$ld" "$ls" > "$tmp/manifest.json"
read -r md ms < <(put "$tmp/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"os":"linux","architecture":"%s"}}]}' \
  "$md" "$ms" "$arch" > "$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
