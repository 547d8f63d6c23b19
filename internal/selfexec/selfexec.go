// Package selfexec owns starting the running (test) binary again as a
// child process — for tests that kill -9 a daemon or a publisher — also
// when the binary runs under an emulator: scripts/qemu-run.sh sets
// LEAFWATCH_SELF_EXEC to its qemu command, which a foreign-architecture
// binary needs to run without binfmt registration.
package selfexec

import (
	"os"
	"os/exec"
	"strings"
)

// Env names the variable holding the wrapper command (space-separated).
const Env = "LEAFWATCH_SELF_EXEC"

// Command returns a command that runs this binary with args.
func Command(args ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	if w := strings.Fields(os.Getenv(Env)); len(w) > 0 {
		return exec.Command(w[0], append(append(w[1:], self), args...)...)
	}
	return exec.Command(self, args...)
}
