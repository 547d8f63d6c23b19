package mqtt

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig("gh1")
	if err := good.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"scheme":   func(c *Config) { c.Broker = "http://x:1" },
		"port":     func(c *Config) { c.Broker = "tcp://host" },
		"device":   func(c *Config) { c.Device = "a/b" },
		"prefix":   func(c *Config) { c.Prefix = "a/#" },
		"clientid": func(c *Config) { c.ClientID = "" },
		"certkey":  func(c *Config) { c.CertFile = "x.pem" },
	} {
		c := DefaultConfig("gh1")
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
}

// TestBrokerCredentialsRefusedAndHidden: credentials in the broker URL are
// refused (paho would use them over Username and the password file, and
// the URL is logged at every connection), and no error quotes a password.
func TestBrokerCredentialsRefusedAndHidden(t *testing.T) {
	for _, tc := range []struct{ broker, want string }{
		{"tcp://leafwatch:s3cret@mq.lan:1883", "mqtt.password_file"},
		{"tcp://leafwatch@mq.lan:1883", "mqtt.username"},
		{"tcp://leafwatch:s3cret@mq.lan", "mqtt.password_file"},
		{"tcp://leafwatch:s3cret@mq.lan:x1", "invalid port"},
		{"ws://leafwatch:s3cret@mq.lan:80/mqtt", "not in the URL"},
	} {
		c := DefaultConfig("gh1")
		c.Broker = tc.broker
		err := c.Validate()
		var be *BrokerError
		switch {
		case err == nil:
			t.Errorf("%s: accepted", tc.broker)
		case strings.Contains(err.Error(), "s3cret"):
			t.Errorf("%s: the error shows the password: %v", tc.broker, err)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %v, want it to mention %s", tc.broker, err, tc.want)
		case !errors.As(err, &be):
			t.Errorf("%s: %v is not a BrokerError", tc.broker, err)
		}
	}
}
