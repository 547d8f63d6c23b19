package fleet

import "os/exec"

func execMount(dir string) ([]byte, error) {
	return exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput()
}

func execUmount(dir string) { exec.Command("umount", dir).Run() }
