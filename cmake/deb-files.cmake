# CPack's pre-build script for the .deb (see cmake/packaging.cmake): adds to the staging tree
# the files derived from the source when the package is made.

# With components grouped into one package, the tree is one level down.
set(root "${CPACK_TEMPORARY_DIRECTORY}/ALL_COMPONENTS_IN_ONE")
if(NOT IS_DIRECTORY "${root}")
  message(FATAL_ERROR "no staging tree at ${root}")
endif()
set(doc "${root}/usr/share/doc/token-broker")

# gzip -9n: the smallest file, and no name or time stamp inside, so a rebuild is identical.
function(gzip_to source destination)
  get_filename_component(directory "${destination}" DIRECTORY)
  file(MAKE_DIRECTORY "${directory}")
  execute_process(COMMAND gzip -9n -c "${source}" OUTPUT_FILE "${destination}"
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "gzip ${source}: ${status}")
  endif()
  file(CHMOD "${destination}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endfunction()

# The unit as the package runs it. The source unit serves `cmake --install` (/usr/local/bin)
# and its example secrets (hr, crm) would keep a fresh install from starting: here the binary
# is the package's and every file in /etc/token-broker/credentials, none at first, is a
# credential. Each replacement must match, so a changed source unit fails loudly here.
file(READ "${CPACK_TOKEN_BROKER_SOURCE_DIR}/systemd/token-broker.service" unit)
set(header [=[
# token-broker: hands out WeCom access tokens over an internal HTTP API.
#
# Installed by the Debian package token-broker (made from systemd/token-broker.service).
# Configure /etc/token-broker/config.json; put each app secret in its own root-only file in
# /etc/token-broker/credentials, named in config.json as "wecom_<file name>". Then:
#   systemctl reload token-broker     # re-read config.json (SIGHUP)
#   systemctl restart token-broker    # needed for new or changed secret files
# Local changes go in a drop-in (`systemctl edit token-broker`), not in this file.
]=])
set(credentials "LoadCredential=wecom:/etc/token-broker/credentials\n")
foreach(edit
    "^[^[]*\\[Unit\\]|${header}\n[Unit]"
    "(\nDescription=[^\n]*\n)|\\1Documentation=man:token-broker(8)\n"
    "ExecStart=/usr/local/bin/token-broker|ExecStart=/usr/bin/token-broker"
    "LoadCredential=hr:[^\n]*\nLoadCredential=crm:[^\n]*\n|${credentials}")
  string(FIND "${edit}" "|" bar)
  string(SUBSTRING "${edit}" 0 ${bar} pattern)
  math(EXPR bar "${bar} + 1")
  string(SUBSTRING "${edit}" ${bar} -1 replacement)
  string(REGEX REPLACE "${pattern}" "${replacement}" edited "${unit}")
  if(edited STREQUAL unit)
    message(FATAL_ERROR "systemd/token-broker.service: no match for ${pattern}")
  endif()
  set(unit "${edited}")
endforeach()
file(WRITE "${root}/lib/systemd/system/token-broker.service" "${unit}")

if(NOT EXISTS "${CPACK_TOKEN_BROKER_MAN_PAGE}")
  message(FATAL_ERROR "no manual page at ${CPACK_TOKEN_BROKER_MAN_PAGE}")
endif()
gzip_to("${CPACK_TOKEN_BROKER_MAN_PAGE}" "${root}/usr/share/man/man8/token-broker.8.gz")

# Debian's changelog: one entry for the version packed; the project's history is in git.
# The date follows SOURCE_DATE_EPOCH when set, for a reproducible package.
string(TIMESTAMP date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(version "${CPACK_PACKAGE_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")
file(WRITE "${CPACK_TOPLEVEL_DIRECTORY}/changelog.Debian" "\
token-broker (${version}) unstable; urgency=medium

  * Package of token-broker ${CPACK_PACKAGE_VERSION} from its source tree.

 -- ${CPACK_PACKAGE_CONTACT}  ${date}
")
gzip_to("${CPACK_TOPLEVEL_DIRECTORY}/changelog.Debian" "${doc}/changelog.Debian.gz")
