// Command leafwatchd watches greenhouse plants for leaf disease: it
// captures frames, classifies them, decides when a disease is really there,
// and publishes labels and alerts over MQTT. Its subcommands check and
// print the configuration. `leafwatchd --help` lists them; the manual page
// is generated from that text.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/internal/buildinfo"
	"github.com/leafwatch/leafwatch/model/cpu"
)

const usage = `Usage: leafwatchd [--config FILE] [--json-logs]
  or:  leafwatchd COMMAND [ARGS]

Watch greenhouse plants for leaf disease: capture camera frames, classify
the leaves in them with an AlexNet model, decide when a disease is really
there, and publish labels and alerts over MQTT (with Home Assistant
discovery). Runs as a systemd service (leafwatchd.service).

Options:
  --config FILE   configuration file (default /etc/leafwatch/leafwatchd.yaml)
  --json-logs     log as JSON lines instead of text
  --help          show this help and exit
  --version       print the version and exit

Commands:
  check-config FILE       validate a configuration file, listing every problem with its line
  print-default-config    print the documented default configuration
  samples COMMAND         the samples kept for labelling: summary, list, label, undo,
                          export, import, delete ("leafwatchd samples" lists them)
  fleet COMMAND           new models for many devices over MQTT: announce, withdraw,
                          status, install, rollback ("leafwatchd fleet" lists them)

Signals: SIGHUP reloads the model and the HTTPS certificate; SIGTERM and
SIGINT stop the daemon cleanly (the outbox is flushed first).

Files:
  /etc/leafwatch/leafwatchd.yaml        the configuration
  /var/lib/leafwatch/model.safetensors  the model (deploy by renaming a file into place)
  /var/lib/leafwatch/                   state: MQTT outbox, snapshots, alert state, samples
  /var/lib/leafwatch/fleet/             model updates: downloads, the previous model, history

Documentation: /usr/share/doc/leafwatch/README.md
`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-h", "-help", "--help", "help":
			fmt.Print(usage)
			return
		case "-version", "--version", "version":
			fmt.Println("leafwatchd", buildinfo.String())
			return
		case "print-default-config":
			fmt.Print(daemon.DefaultConfigYAML())
			return
		case "check-config":
			os.Exit(checkConfig(os.Args[2:], os.Stdout, os.Stderr))
		case "samples":
			os.Exit(cmdSamples(os.Args[2:], os.Stdout, os.Stderr))
		case "fleet":
			os.Exit(cmdFleet(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	cpu.TuneBLAS() // may re-exec with OPENBLAS_CORETYPE set
	fs := flag.NewFlagSet("leafwatchd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "/etc/leafwatch/leafwatchd.yaml", "configuration file")
	jsonLogs := fs.Bool("json-logs", false, "log as JSON lines")
	if err := fs.Parse(os.Args[1:]); err != nil || fs.NArg() > 0 {
		if err == nil {
			err = fmt.Errorf("unknown command %q", fs.Arg(0))
		}
		fmt.Fprintf(os.Stderr, "leafwatchd: %v\n\n%s", err, usage)
		os.Exit(2)
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *jsonLogs {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	if err := daemon.RunFile(*cfgPath, log); err != nil {
		log.Error("leafwatchd stopped", "err", err)
		os.Exit(1)
	}
}

func checkConfig(args []string, out, errs io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(errs, "usage: leafwatchd check-config FILE")
		return 2
	}
	if _, err := daemon.LoadConfig(args[0]); err != nil {
		fmt.Fprintln(errs, err)
		return 1
	}
	fmt.Fprintln(out, args[0]+": ok")
	return 0
}
