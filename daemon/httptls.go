package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// HTTPTLS serves the status page, labelling and metrics over HTTPS.
type HTTPTLS struct {
	CertFile string `yaml:"cert_file"` // PEM certificate chain, leaf first
	KeyFile  string `yaml:"key_file"`  // PEM private key
}

// Enabled reports whether HTTPS is configured.
func (t HTTPTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// validate says what is wrong with the settings without reading the files
// (check-config may run where they are not readable yet).
func (t HTTPTLS) validate() error {
	if t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		return errors.New("give both cert_file and key_file, or neither")
	}
	return nil
}

// certStore holds the certificate the server presents. SIGHUP reloads it
// from the files, so a renewed certificate (certbot, step-ca, an
// operator's script) is served without a restart; a reload that fails
// keeps the previous certificate and says why.
type certStore struct {
	cfg  HTTPTLS
	cert atomic.Pointer[tls.Certificate]
}

// loadCertStore reads the pair once; nil when TLS is off.
func loadCertStore(c HTTPTLS) (*certStore, error) {
	if !c.Enabled() {
		return nil, nil
	}
	s := &certStore{cfg: c}
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads the files again and serves them from the next handshake on.
// It returns the new leaf's expiry.
func (s *certStore) reload() (time.Time, error) {
	pair, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return time.Time{}, fmt.Errorf("http_tls: %s / %s: %w", s.cfg.CertFile, s.cfg.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("http_tls: %s: %w", s.cfg.CertFile, err)
	}
	pair.Leaf = leaf
	s.cert.Store(&pair)
	return leaf.NotAfter, nil
}

// config is the server's TLS configuration: TLS 1.2 at least (1.0 and 1.1
// are refused in the handshake), the current certificate per handshake.
func (s *certStore) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// reloadTLS is SIGHUP's part for the HTTP server.
func (d *Daemon) reloadTLS() {
	if d.certs == nil {
		return
	}
	notAfter, err := d.certs.reload()
	if err != nil {
		d.log.Error("HTTPS certificate not reloaded; the previous one is still served", "err", err)
		return
	}
	d.log.Info("HTTPS certificate reloaded", "cert_file", d.certs.cfg.CertFile, "not_after", notAfter.UTC().Format(time.RFC3339))
}
