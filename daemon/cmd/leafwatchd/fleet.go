package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/mqtt"
)

const fleetUsage = `Usage: leafwatchd fleet COMMAND [OPTIONS]

New models for many devices, through the MQTT broker (/usr/share/doc/leafwatch/daemon/fleet/README.md).

Commands:
  announce --model CKPT --url URL [--group G]
                     announce the signed bundle beside CKPT, served at URL, to a group
                     (retained: devices offline now take it when they come back)
  withdraw [--group G]
                     remove a group's announcement
  status             print every device's model and update state
  install --device D run the announced update on a device now (auto_install: false)
  rollback --device D
                     serve the previous model again on a device

Options (all commands):
  --config FILE      take the broker, credentials and prefix from this config
                     (default /etc/leafwatch/leafwatchd.yaml when it exists)
  --broker URL       the broker (tcp://host:1883, ssl://host:8883) instead
  --print            announce/withdraw: print the topic and payload instead of
                     publishing (for mosquitto_pub -r -t TOPIC -f FILE)
`

// fleetEnv is a connection's settings.
type fleetEnv struct {
	cfg mqtt.Config
	out io.Writer
}

func cmdFleet(args []string, out, errs io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(out, fleetUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	fs := flag.NewFlagSet("leafwatchd fleet "+cmd, flag.ContinueOnError)
	fs.SetOutput(errs)
	cfgPath := fs.String("config", "", "configuration file")
	broker := fs.String("broker", "", "broker URL")
	group := fs.String("group", "default", "fleet group")
	ckpt := fs.String("model", "", "checkpoint with its signed manifest beside it")
	url := fs.String("url", "", "where devices download the checkpoint")
	device := fs.String("device", "", "device name")
	printOnly := fs.Bool("print", false, "print instead of publishing")
	unsigned := fs.Bool("unsigned", false, "announce an unsigned bundle (devices with allow_unsigned only)")
	wait := fs.Duration("wait", 2*time.Second, "status: how long to collect retained states")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	env, err := fleetConfig(*cfgPath, *broker)
	if err != nil {
		fmt.Fprintf(errs, "leafwatchd fleet: %v\n", err)
		return 1
	}
	env.out = out
	if !mqtt.ValidName(*group) {
		fmt.Fprintf(errs, "leafwatchd fleet: --group %q: use letters, digits, '_' or '-'\n", *group)
		return 2
	}
	topic := mqtt.FleetModel(env.cfg.Prefix, *group)
	switch cmd {
	case "announce":
		if *ckpt == "" || *url == "" {
			err = errors.New("announce needs --model and --url")
			break
		}
		var a fleet.Announcement
		if a, err = fleet.Announce(*ckpt, *url, *unsigned, time.Now()); err == nil {
			err = env.send(topic, a.Marshal(), *printOnly)
			if err == nil && !*printOnly {
				fmt.Fprintf(out, "announced model %s (%d MB) to group %s on %s\n", a.Version, a.Size>>20, *group, topic)
			}
		}
	case "withdraw":
		if err = env.send(topic, nil, *printOnly); err == nil && !*printOnly {
			fmt.Fprintf(out, "withdrew the announcement on %s\n", topic)
		}
	case "status":
		err = env.status(*wait)
	case "install", "rollback":
		if !mqtt.ValidName(*device) {
			err = fmt.Errorf("%s needs --device NAME", cmd)
			break
		}
		err = env.command(*device, cmd)
	default:
		fmt.Fprintf(errs, "leafwatchd fleet: unknown command %q\n\n%s", cmd, fleetUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(errs, "leafwatchd fleet %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// fleetConfig takes the MQTT settings from the config file (given, or the
// default one when it exists), with --broker overriding its broker.
func fleetConfig(path, broker string) (fleetEnv, error) {
	cfg := daemon.DefaultConfig()
	if path == "" {
		if _, err := os.Stat("/etc/leafwatch/leafwatchd.yaml"); err == nil && broker == "" {
			path = "/etc/leafwatch/leafwatchd.yaml"
		}
	}
	if path != "" {
		c, err := daemon.LoadConfig(path)
		if err != nil {
			return fleetEnv{}, err
		}
		cfg = c
	} else if broker == "" {
		return fleetEnv{}, errors.New("give --broker URL or --config FILE")
	}
	m := cfg.MQTT
	if broker != "" {
		m.Broker = broker
	}
	return fleetEnv{cfg: m}, nil
}

func (e fleetEnv) connect() (paho.Client, error) {
	o, err := e.cfg.ClientOptions(fmt.Sprintf("leafwatchd-fleet-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		if t.Error() != nil {
			return nil, fmt.Errorf("broker %s: %w", e.cfg.Broker, t.Error())
		}
		return nil, fmt.Errorf("broker %s: no answer in 15 s", e.cfg.Broker)
	}
	return c, nil
}

// send publishes a retained message (empty: clears it).
func (e fleetEnv) send(topic string, payload []byte, printOnly bool) error {
	if printOnly {
		fmt.Fprintf(e.out, "%s\n%s\n", topic, payload)
		return nil
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	t := c.Publish(topic, 1, true, payload)
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("publish %s: %v", topic, t.Error())
	}
	return nil
}

// status collects the retained update states and prints one line per
// device.
func (e fleetEnv) status(wait time.Duration) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	var mu sync.Mutex
	states := map[string]fleet.State{}
	bad := map[string]string{}
	filter := e.cfg.Prefix + "/+/model/update"
	t := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		dev := strings.Split(strings.TrimPrefix(m.Topic(), e.cfg.Prefix+"/"), "/")[0]
		var s fleet.State
		mu.Lock()
		defer mu.Unlock()
		if err := json.Unmarshal(m.Payload(), &s); err != nil {
			bad[dev] = err.Error()
			return
		}
		states[dev] = s
	})
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", filter, t.Error())
	}
	time.Sleep(wait)
	mu.Lock()
	defer mu.Unlock()
	if len(states) == 0 && len(bad) == 0 {
		return fmt.Errorf("no device has published a model update state on %s", filter)
	}
	var devs []string
	for d := range states {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	w := tabwriter.NewWriter(e.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tGROUP\tSERVING\tOFFERED\tSTATE\tPREVIOUS\tSINCE\tDETAIL")
	for _, d := range devs {
		s := states[d]
		detail := s.Reason
		if s.Acceptance != nil && detail == "" {
			detail = s.Acceptance.Rule
		}
		if s.UpdatePercentage != nil {
			detail = fmt.Sprintf("%.0f%% downloaded", *s.UpdatePercentage)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d, s.Group, s.InstalledVersion, dash(s.OfferedVersion), s.State,
			dash(s.PreviousVersion), s.Time.Local().Format("2006-01-02 15:04"), detail)
	}
	for d, err := range bad {
		fmt.Fprintf(w, "%s\t\t\t\tunreadable\t\t\t%s\n", d, err)
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// command sends install or rollback to a device and waits for its result.
func (e fleetEnv) command(device, name string) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	topics := mqtt.NewTopics(e.cfg.Prefix, device)
	id := fmt.Sprintf("fleet-%d", time.Now().UnixNano())
	res := make(chan mqtt.Result, 1)
	t := c.Subscribe(topics.Result(), 1, func(_ paho.Client, m paho.Message) {
		var r mqtt.Result
		if json.Unmarshal(m.Payload(), &r) == nil && r.ID == id {
			select {
			case res <- r:
			default:
			}
		}
	})
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", topics.Result(), t.Error())
	}
	payload, _ := json.Marshal(map[string]string{"id": id})
	if t := c.Publish(topics.Command(name), 1, false, payload); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("publish: %v", t.Error())
	}
	select {
	case r := <-res:
		if !r.OK {
			return fmt.Errorf("device %s: %s", device, r.Error)
		}
		d, _ := json.Marshal(r.Detail)
		fmt.Fprintf(e.out, "device %s: %s done %s\n", device, name, d)
		return nil
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("device %s did not answer in 2 minutes (is it online? commands: true in its config?)", device)
	}
}
