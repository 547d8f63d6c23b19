// Package mqtt owns everything Leafwatch says over MQTT: the connection
// (TLS, credentials, last will, reconnects), the topic scheme and payloads,
// the durable on-disk outbox that keeps decided alerts across broker and
// process restarts, Home Assistant discovery, the command topic, and the
// embedded broker used when no other broker exists.
//
// Nothing here knows about cameras or models beyond the payload types: the
// daemon decides, this package delivers.
package mqtt
