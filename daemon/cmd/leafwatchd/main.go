// Command leafwatchd watches greenhouse plants for leaf disease: it
// captures frames, classifies them, decides when a disease is really there,
// and publishes labels and alerts over MQTT.
//
//	leafwatchd [-config FILE]          run
//	leafwatchd check-config FILE       validate a config and exit
//	leafwatchd print-default-config    print the documented default config
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/model"
)

func main() {
	model.TuneBLAS() // may re-exec with OPENBLAS_CORETYPE set
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "print-default-config":
			fmt.Print(daemon.DefaultConfigYAML())
			return
		case "check-config":
			if len(os.Args) != 3 {
				fmt.Fprintln(os.Stderr, "usage: leafwatchd check-config FILE")
				os.Exit(2)
			}
			if _, err := daemon.LoadConfig(os.Args[2]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println(os.Args[2] + ": ok")
			return
		case "version":
			fmt.Println(daemon.Version)
			return
		}
	}
	cfgPath := flag.String("config", "/etc/leafwatch/leafwatchd.yaml", "configuration file")
	jsonLogs := flag.Bool("json-logs", false, "log as JSON lines")
	flag.Parse()
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
