package mqtt

import (
	"context"
	"math/rand/v2"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// firstBackoff is the wait after the first failed connection attempt.
const firstBackoff = 500 * time.Millisecond

// keepConnected connects, and reconnects after every loss, with a backoff
// that starts at 500 ms, doubles up to max_reconnect_interval (default
// 5 s) and starts over after every successful connection: a broker that
// comes back after a short outage is reached again within seconds, however
// many outages came before. (paho's own reconnect keeps its backoff across
// outages: after a 6 s outage it reconnected 54 s after the broker was back.)
func (p *Publisher) keepConnected(ctx context.Context) {
	limit := p.cfg.MaxReconnectInterval
	if limit <= 0 {
		limit = 5 * time.Second
	}
	backoff, failures := firstBackoff, 0
	for ctx.Err() == nil {
		tok := p.client.Connect()
		if waitToken(ctx, tok) && tok.Error() == nil {
			backoff, failures = firstBackoff, 0
			select {
			case <-p.lostCh:
				continue
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures == 1 || failures%20 == 0 {
			p.log.Warn("cannot reach the broker; retrying", "broker", p.cfg.Broker, "attempts", failures, "err", tok.Error(), "retry_in", backoff)
		}
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff)/2+1))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(backoff*2, limit)
	}
}

// waitToken waits for a paho token or ctx; it reports whether the token
// completed.
func waitToken(ctx context.Context, t paho.Token) bool {
	select {
	case <-t.Done():
		return true
	case <-ctx.Done():
		return false
	}
}
