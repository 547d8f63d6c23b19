package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA signs server certificates for 127.0.0.1 in tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leafwatch test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for 127.0.0.1 with the given serial and its key.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leafwatchd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// TestHTTPS: the server speaks TLS 1.2+ only, with the certificate from the
// files; a reload serves a renewed certificate without a restart and keeps
// the old one when the new files are bad; /healthz needs no credentials,
// the rest does; plain HTTP to the port gets no page.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	crt, key := filepath.Join(dir, "https.crt"), filepath.Join(dir, "https.key")
	ca.issue(t, crt, key, 100)
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("grower:tomato-tomato\n"), 0o600)
	r := newRig(t, rigOptions{yaml: "http_auth: {basic_auth_file: " + users + "}\nhttp_tls: {cert_file: " + crt + ", key_file: " + key + "}\n"})
	r.stop(t)
	// Beyond loopback, so the warnings are decided as for a real device.
	port := strings.Split(freeAddr(t), ":")[1]
	r.cfg.Listen, r.http = "0.0.0.0:"+port, "127.0.0.1:"+port
	r.start(t)

	client := func(maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool, MaxVersion: maxVersion}, DisableKeepAlives: true}}
	}
	get := func(c *http.Client, path string, auth bool) (int, *tls.ConnectionState, error) {
		req, _ := http.NewRequest("GET", "https://"+r.http+path, nil)
		if auth {
			req.SetBasicAuth("grower", "tomato-tomato")
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.TLS, nil
	}
	c := client(0)
	code, st, err := get(c, "/healthz", false)
	if err != nil || code != 200 {
		t.Fatalf("/healthz over HTTPS without credentials: %d %v", code, err)
	}
	if st.Version < tls.VersionTLS12 || st.PeerCertificates[0].SerialNumber.Int64() != 100 {
		t.Errorf("TLS version %x, serial %v", st.Version, st.PeerCertificates[0].SerialNumber)
	}
	if code, _, _ := get(c, "/metrics", false); code != 401 {
		t.Errorf("/metrics without credentials: %d", code)
	}
	if code, _, err := get(c, "/metrics", true); code != 200 {
		t.Errorf("/metrics with credentials: %d %v", code, err)
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if _, _, err := get(client(v), "/healthz", false); err == nil {
			t.Errorf("a TLS %x client was served", v)
		}
	}
	resp, err := http.Get("http://" + r.http + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served by the HTTPS port")
		}
	}
	if strings.Contains(r.logs.String(), "in the clear") {
		t.Error("warned about clear-text passwords although TLS is on")
	}

	// Renewal: new files, a reload, the new certificate from the next
	// handshake on.
	ca.issue(t, crt, key, 200)
	r.d.reloadTLS()
	if _, st, err := get(c, "/healthz", false); err != nil || st.PeerCertificates[0].SerialNumber.Int64() != 200 {
		t.Fatalf("after the reload: %v (serial %v)", err, st)
	}
	// A broken renewal keeps the certificate serving.
	os.WriteFile(crt, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n"), 0o644)
	r.d.reloadTLS()
	if _, st, err := get(c, "/healthz", false); err != nil || st.PeerCertificates[0].SerialNumber.Int64() != 200 {
		t.Fatalf("after a failed reload: %v", err)
	}
	if !strings.Contains(r.logs.String(), "certificate not reloaded") {
		t.Error("a failed certificate reload was not logged")
	}

	// curl, where installed, as a client that is not Go's.
	if curl, err := exec.LookPath("curl"); err == nil {
		ca.issue(t, crt, key, 300)
		r.d.reloadTLS()
		caFile := filepath.Join(dir, "ca.pem")
		os.WriteFile(caFile, ca.pem, 0o644)
		out, err := exec.Command(curl, "-sS", "--cacert", caFile, "-u", "grower:tomato-tomato", "https://"+r.http+"/readyz").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "model_version") {
			t.Errorf("curl over HTTPS: %v: %s", err, out)
		}
		if out, err := exec.Command(curl, "-sS", "--cacert", caFile, "--tls-max", "1.1", "https://"+r.http+"/healthz").CombinedOutput(); err == nil {
			t.Errorf("curl with TLS ≤ 1.1 was served: %s", out)
		}
	}
}

// TestClearTextCredentialsWarn: http_auth without TLS beyond loopback is
// warned about at start; half a TLS setting is a config error.
func TestClearTextCredentialsWarn(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("grower:tomato-tomato\n"), 0o600)
	r := newRig(t, rigOptions{yaml: "http_auth: {basic_auth_file: " + users + "}\n"})
	r.stop(t)
	port := strings.Split(freeAddr(t), ":")[1]
	r.cfg.Listen, r.http = "0.0.0.0:"+port, "127.0.0.1:"+port
	r.start(t)
	if !strings.Contains(r.logs.String(), "in the clear") {
		t.Error("no warning for basic auth over plain HTTP beyond loopback")
	}
	_, err := ParseConfig("x.yaml", []byte("http_tls: {cert_file: /x.pem}\ncameras: [{name: a, source: /tmp}]\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1: http_tls: give both") {
		t.Errorf("half a TLS setting: %v", err)
	}
}
