# The Debian package, made from the built tree without compiling again:
#   cpack --config build/release/CPackConfig.cmake      (scripts/deb-verify.sh checks it)
# /usr/bin/token-broker, its systemd unit, /etc/token-broker/config.json (a conffile), the
# manual page, copyright and changelog; maintainer scripts as dh_installsystemd writes them.

# `make install` (and so cpack, which runs it) would first build everything, tests included;
# packaging must take the binary as built, and `cmake --install` never built anyway.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)

# Files only the package installs: `cmake --install` leaves /etc and /lib alone.
install(FILES packaging/deb/config.json DESTINATION /etc/token-broker COMPONENT deb
        EXCLUDE_FROM_ALL)
# The secrets, loaded by the unit as credentials: root's only (lintian: non-standard-dir-perm).
install(DIRECTORY DESTINATION /etc/token-broker/credentials COMPONENT deb EXCLUDE_FROM_ALL
        DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
install(FILES packaging/deb/copyright DESTINATION share/doc/token-broker COMPONENT deb
        EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME token-broker)
set(CPACK_PACKAGE_VENDOR "token-broker maintainers")
# The Maintainer: field and the changelog's signature, as the project's commits sign.
set(CPACK_PACKAGE_CONTACT
    "token-broker maintainers <maintainers@users.noreply.h-seed-609bc678.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "WeCom credential broker for internal services")
# CPack puts the summary first and indents these lines: the long description.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "\
token-broker holds every WeCom access token, JS-SDK ticket and third-party
credential a company's services need, refreshes each before it expires with
one upstream call, shares them through Redis and hands them out over an
internal HTTP API. It runs as a hardened systemd service.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Raise it for a rebuilt package of the same version: cpack -D CPACK_DEBIAN_PACKAGE_RELEASE=2.
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # token-broker_0.1.0-1_amd64.deb
# Depends: from the libraries the binary links (dpkg-shlibdeps), so apt-get pulls them.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# And the unit's ExecReload= runs /bin/kill, which procps provides (not in a minimal system).
set(CPACK_DEBIAN_PACKAGE_DEPENDS procps)
set(CPACK_STRIP_FILES ON)

# The binary's rule installs to bin: /usr/bin in the package. Absolute destinations (/etc,
# /lib) go under DESTDIR, the staging directory, not the build machine's own /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# One package from the binary's component and the package-only one.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL Unspecified deb)

set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/deb/conffiles ${PROJECT_SOURCE_DIR}/packaging/deb/postinst
    ${PROJECT_SOURCE_DIR}/packaging/deb/prerm ${PROJECT_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# Files derived when the package is made, so each follows the current source: the unit, the
# gzipped manual page and changelog (cmake/deb-files.cmake reads these).
set(CPACK_TOKEN_BROKER_SOURCE_DIR ${PROJECT_SOURCE_DIR})
set(CPACK_TOKEN_BROKER_MAN_PAGE ${PROJECT_SOURCE_DIR}/docs/token-broker.8)
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_SOURCE_DIR}/cmake/deb-files.cmake)

# lintian (scripts/deb-verify.sh runs it) reports no error and two warnings, both intended:
# - non-standard-dir-perm etc/token-broker/credentials/ 0700: the secrets are root's alone.
# - initial-upload-closes-no-bugs: no Debian ITP bug to close; the package is internal.
# And these informational tags: binary-has-unneeded-section (.comment, kept by CPack's
# strip), hardening-no-bindnow and hardening-no-fortify-functions (the compile and link
# flags of the build, not the package's), package-supports-alternative-init-but-no-init.d-
# script (systemd only: the unit's sandbox is the point).
include(CPack)
