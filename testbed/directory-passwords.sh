#!/usr/bin/env bash
# Sets test-bed users' passwords in the test bed's LDAP directory (slapd, in
# the given container), as chpasswd does for local users: lines
# "user:password" on stdin. Root on the directory host manages it over
# ldapi://; slapd stores the passwords hashed. Used by `make demo`, the
# benchmarks and the molecule tests.
set -euo pipefail
container=${1:?usage: directory-passwords.sh CONTAINER < lines user:password}
exec podman exec -i "$container" python3 -c '
import sys
import ldap
import ldap.filter

directory = ldap.initialize("ldapi:///")
directory.sasl_external_bind_s()
root = directory.search_s("", ldap.SCOPE_BASE, attrlist=["namingContexts"])
base = root[0][1]["namingContexts"][0].decode()
for line in sys.stdin:
    user, _, password = line.rstrip("\n").partition(":")
    if not user:
        continue
    query = "(&(objectClass=posixAccount)(uid=%s))" % ldap.filter.escape_filter_chars(user)
    found = directory.search_s(base, ldap.SCOPE_SUBTREE, query, attrlist=["uid"])
    if not found:
        sys.exit("%s is not a user of the directory %s" % (user, base))
    directory.passwd_s(found[0][0], None, password)
'
