# What scripts/docker-verify.sh and scripts/deb-verify.sh share: podman as these machines need
# it, the Debian base images made without a registry, and free loopback ports. Sourced; the
# caller defines fail() and runs as root.

podman=(podman --runtime /usr/bin/runc)

# ensure_podman [PACKAGE...]: podman, runc and debootstrap, with the extra packages given.
ensure_podman() {
  local package missing=()
  for package in podman runc debootstrap "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  # The default nofile ulimit podman sets is more than these machines allow a container.
  local conf=/etc/containers/containers.conf
  if ! grep -qs '^ *default_ulimits' "$conf"; then
    if grep -qs '^\[containers\]' "$conf"; then
      sed -i '/^\[containers\]/a default_ulimits = []' "$conf"
    else
      printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
    fi
  fi
}

# ensure_base_images: docker.io/library/debian:bookworm and :bookworm-slim, as Debian makes
# them, from the mirror apt uses (no registry is reachable). Kept, so only a first run pays.
ensure_base_images() {
  local base=docker.io/library/debian
  if "${podman[@]}" image exists "$base:bookworm" &&
     "${podman[@]}" image exists "$base:bookworm-slim"; then
    return
  fi
  local mirror rootfs
  mirror=$(grep -rhsE '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/ |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/base-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null ||
    { rm -rf "$rootfs"; fail "debootstrap"; }
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian*}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -f "$rootfs/etc/apt/sources.list"
  # As Debian's images: apt keeps no package caches and fetches no translations.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
  import_rootfs "$rootfs" "$base:bookworm"
  # -slim, as Debian's own: no documentation, manual pages or translations, now or later.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
SLIM
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/*
  import_rootfs "$rootfs" "$base:bookworm-slim"
  rm -rf "$rootfs"
}

import_rootfs() {  # import_rootfs DIR IMAGE
  tar -C "$1" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    "${podman[@]}" import -q --change 'CMD ["bash"]' - "$2" >/dev/null
}

# On exit: the container $container, the processes in pids and the directory $work go.
clean_up() {
  "${podman[@]}" rm -f -t 5 "$container" >/dev/null 2>&1 || true
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
