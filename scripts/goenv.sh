# Sourced by the project's scripts (and exported by the Makefile): build
# with the Go release go.mod's `go` line names, which has the security
# fixes the project was checked against. Machines that set
# GOTOOLCHAIN=local (or have an older Go) then fetch that release from the
# module proxy once (~75 MB, cached in the module cache).
# LEAFWATCH_GOTOOLCHAIN=local uses the installed Go instead.
_lw_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOTOOLCHAIN=${LEAFWATCH_GOTOOLCHAIN:-go$(sed -n 's/^go //p' "$_lw_root/go.mod")}
unset _lw_root
