package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leafwatch/leafwatch/internal/redact"
)

// Config describes the broker connection and what is published.
type Config struct {
	// Broker is tcp://, ssl://, ws:// or wss:// with host and port.
	Broker string `yaml:"broker"`
	// ClientID must be stable per device so the broker keeps its session.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	// PasswordFile holds the password (first line). The password may also
	// come from the environment variable named by PasswordEnv
	// (default LEAFWATCH_MQTT_PASSWORD); it is never a command-line flag.
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`

	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Insecure skips certificate verification. Only for testing a broker
	// with a self-signed certificate you cannot get the CA of.
	Insecure bool `yaml:"insecure"`

	KeepAlive time.Duration `yaml:"keepalive"`
	// MaxReconnectInterval caps the reconnect backoff (0.5 s doubling);
	// it starts over after every successful connection.
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`

	// Prefix and Device form every topic: <prefix>/<device>/...
	Prefix string `yaml:"prefix"`
	Device string `yaml:"device"`

	Discovery DiscoveryConfig `yaml:"discovery"`
	// Commands enables the <prefix>/<device>/cmd/<name> topics.
	Commands bool `yaml:"commands"`

	// ThumbnailMaxBytes caps the JPEG published with an alert; 0 disables
	// thumbnails.
	ThumbnailMaxBytes int `yaml:"thumbnail_max_bytes"`
}

// DiscoveryConfig controls Home Assistant MQTT discovery.
type DiscoveryConfig struct {
	Enabled bool   `yaml:"enabled"`
	Prefix  string `yaml:"prefix"`
}

// DefaultConfig is a sensible starting point for one device.
// An empty device leaves Device and ClientID empty, to be derived later.
func DefaultConfig(device string) Config {
	id := ""
	if device != "" {
		id = "leafwatch-" + device
	}
	return Config{
		Broker:               "tcp://127.0.0.1:1883",
		ClientID:             id,
		PasswordEnv:          "LEAFWATCH_MQTT_PASSWORD",
		KeepAlive:            30 * time.Second,
		MaxReconnectInterval: 5 * time.Second,
		Prefix:               "leafwatch",
		Device:               device,
		Discovery:            DiscoveryConfig{Enabled: true, Prefix: "homeassistant"},
		Commands:             true,
		ThumbnailMaxBytes:    64 << 10,
	}
}

var topicWord = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidName reports whether s can be one level of a topic and a Home
// Assistant object id: letters, digits, '_' and '-'.
func ValidName(s string) bool { return topicWord.MatchString(s) }

// BrokerError is a problem with the broker URL, apart from the other
// settings so that a config file's checker can point at the line that
// names the broker.
type BrokerError struct{ Err error }

func (e *BrokerError) Error() string { return e.Err.Error() }
func (e *BrokerError) Unwrap() error { return e.Err }

// Validate checks the configuration and reports every problem at once.
// The broker URL is quoted with any password hidden, and credentials in it
// are refused: paho would use them over Username and the password file,
// and the URL is logged at every connection.
func (c Config) Validate() error {
	var errs []error
	shown := redact.Passwords(c.Broker)
	brokerErr := func(format string, a ...any) {
		errs = append(errs, &BrokerError{fmt.Errorf("broker %q: "+format, append([]any{shown}, a...)...)})
	}
	u, err := url.Parse(c.Broker)
	switch {
	case err != nil:
		brokerErr("%s", redact.Passwords(err.Error()))
	case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "tls" && u.Scheme != "mqtts" && u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "mqtt":
		brokerErr("scheme must be tcp, ssl, ws or wss")
	case u.User != nil:
		brokerErr("put the user in mqtt.username and the password in mqtt.password_file (or $LEAFWATCH_MQTT_PASSWORD), not in the URL, which is logged")
	case u.Port() == "":
		brokerErr("needs a port (1883 for tcp, 8883 for ssl)")
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id is empty: use a stable id per device"))
	}
	if !ValidName(c.Device) {
		errs = append(errs, fmt.Errorf("device %q: use letters, digits, '_' or '-'", c.Device))
	}
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, "#+") || strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("prefix %q: must be non-empty, without wildcards or a trailing '/'", c.Prefix))
	}
	if c.Discovery.Enabled && (c.Discovery.Prefix == "" || strings.ContainsAny(c.Discovery.Prefix, "#+")) {
		errs = append(errs, fmt.Errorf("discovery prefix %q is not a topic prefix", c.Discovery.Prefix))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together"))
	}
	if err == nil && !secureScheme(u.Scheme) && (c.CAFile != "" || c.CertFile != "" || c.Insecure) {
		errs = append(errs, fmt.Errorf("broker %q is plaintext (%s://) but TLS settings (ca_file, cert_file, insecure) are given: use ssl:// or wss://", shown, u.Scheme))
	}
	if c.MaxReconnectInterval < 0 || c.MaxReconnectInterval > 10*time.Minute {
		errs = append(errs, fmt.Errorf("max_reconnect_interval %v: use 0 (default 5s) up to 10m", c.MaxReconnectInterval))
	}
	if c.KeepAlive < 0 || (c.KeepAlive > 0 && c.KeepAlive < time.Second) {
		errs = append(errs, fmt.Errorf("keepalive %v: use at least 1s", c.KeepAlive))
	}
	return errors.Join(errs...)
}

// password reads the password from the file or the environment.
func (c Config) password() (string, error) {
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("mqtt password file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimRight(line, "\r"), nil
	}
	env := c.PasswordEnv
	if env == "" {
		env = "LEAFWATCH_MQTT_PASSWORD"
	}
	return os.Getenv(env), nil
}

func secureScheme(s string) bool { return s == "ssl" || s == "tls" || s == "mqtts" || s == "wss" }

func (c Config) tlsConfig() (*tls.Config, error) {
	u, _ := url.Parse(c.Broker)
	if u == nil || !secureScheme(u.Scheme) {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt ca_file %s: no PEM certificates in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// ClientOptions are paho options for a short-lived tool connection (the
// fleet commands) with this configuration's broker, credentials and TLS.
func (c Config) ClientOptions(clientID string) (*paho.ClientOptions, error) {
	pw, err := c.password()
	if err != nil {
		return nil, err
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions().AddBroker(c.Broker).SetClientID(clientID).SetUsername(c.Username).SetPassword(pw).
		SetCleanSession(true).SetConnectTimeout(10 * time.Second).SetAutoReconnect(false)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	return o, nil
}
