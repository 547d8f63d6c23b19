package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// httpAuth checks requests against a bearer token or basic-auth users
// read from files at start. /healthz stays open: it says only "ok", and
// probes rarely carry credentials.
type httpAuth struct {
	token [32]byte // sha256 of the token; zero when none
	users map[string][32]byte
}

// loadHTTPAuth reads the files named in the config; nil means no auth.
func loadHTTPAuth(c HTTPAuth) (*httpAuth, error) {
	if !c.Enabled() {
		return nil, nil
	}
	a := &httpAuth{users: map[string][32]byte{}}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("http_auth.token_file: %w", err)
		}
		tok := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		if len(tok) < 16 {
			return nil, fmt.Errorf("http_auth.token_file %s: the token is %d characters, use at least 16", c.TokenFile, len(tok))
		}
		a.token = sha256.Sum256([]byte(tok))
	}
	if c.BasicAuthFile != "" {
		b, err := os.ReadFile(c.BasicAuthFile)
		if err != nil {
			return nil, fmt.Errorf("http_auth.basic_auth_file: %w", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			user, pw, ok := strings.Cut(line, ":")
			if !ok || user == "" || pw == "" {
				return nil, fmt.Errorf("http_auth.basic_auth_file %s line %d: want user:password", c.BasicAuthFile, i+1)
			}
			a.users[user] = sha256.Sum256([]byte(pw))
		}
		if len(a.users) == 0 {
			return nil, errors.New("http_auth.basic_auth_file holds no user:password line")
		}
	}
	return a, nil
}

func (a *httpAuth) allowed(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); a.token != [32]byte{} && strings.HasPrefix(h, "Bearer ") {
		got := sha256.Sum256([]byte(strings.TrimPrefix(h, "Bearer ")))
		return subtle.ConstantTimeCompare(got[:], a.token[:]) == 1
	}
	if user, pw, ok := r.BasicAuth(); ok {
		want, known := a.users[user]
		got := sha256.Sum256([]byte(pw))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && known
	}
	return false
}

// wrap puts the check in front of every handler but /healthz.
func (a *httpAuth) wrap(next http.Handler) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && !a.allowed(r) {
			if len(a.users) > 0 {
				w.Header().Set("WWW-Authenticate", `Basic realm="leafwatch"`)
			}
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
