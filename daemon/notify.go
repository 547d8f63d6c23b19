package daemon

import (
	"net"
	"os"
	"strconv"
	"time"
)

// notify sends a systemd sd_notify message when run under Type=notify.
func notify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

// watchdogInterval is WatchdogSec as systemd passes it, or 0.
func watchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// livenessPeriod is how often an idle camera loop shows it is alive: well
// inside the watchdog's half-interval that the daemon checks against.
func livenessPeriod() time.Duration {
	if iv := watchdogInterval(); iv > 0 {
		return min(time.Second, iv/6)
	}
	return time.Second
}
