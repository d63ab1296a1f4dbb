package api

import (
	"encoding/json"
	"strconv"
	"strings"

	"engram/projections"
)

// pduView is the part of a PDU a client sees.
type pduView struct {
	Type           string          `json:"type"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	StateKey       *string         `json:"state_key"`
	Redacts        string          `json:"redacts"`
}

// appendClientEvent appends the client-format JSON of an event (the "client
// event" of the spec: no hashes, signatures, prev/auth events or depth).
// The viewer's own transaction ID goes in unsigned.
func appendClientEvent(b []byte, rec *projections.EventRecord, viewer, device string, now int64) []byte {
	var v pduView
	if err := json.Unmarshal(rec.PDU, &v); err != nil {
		v.Content = json.RawMessage("{}")
	}
	if len(v.Content) == 0 {
		v.Content = json.RawMessage("{}")
	}
	b = append(b, `{"content":`...)
	b = append(b, v.Content...)
	b = append(b, `,"event_id":`...)
	b = appendJSONString(b, rec.EventID)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, v.OriginServerTS, 10)
	if v.Redacts != "" {
		b = append(b, `,"redacts":`...)
		b = appendJSONString(b, v.Redacts)
	}
	b = append(b, `,"room_id":`...)
	b = appendJSONString(b, rec.RoomID)
	b = append(b, `,"sender":`...)
	b = appendJSONString(b, v.Sender)
	if v.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendJSONString(b, *v.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendJSONString(b, v.Type)
	b = append(b, `,"unsigned":{"age":`...)
	b = strconv.AppendInt(b, max(0, now-v.OriginServerTS), 10)
	if txn, ok := txnFor(rec.Txn, viewer, device); ok {
		b = append(b, `,"transaction_id":`...)
		b = appendJSONString(b, txn)
	}
	return append(b, "}}"...)
}

// txnKey builds the idempotency key of a client send: per device, room and
// transaction ID, so the same transaction ID in another room is a new send.
func txnKey(user, device, room, txn string) string {
	return user + "\x00" + device + "\x00" + room + "\x00" + txn
}

// txnFor returns the transaction ID of a send if viewer's device made it.
func txnFor(key, viewer, device string) (string, bool) {
	if key == "" {
		return "", false
	}
	parts := strings.SplitN(key, "\x00", 4)
	if len(parts) != 4 || parts[0] != viewer || parts[1] != device {
		return "", false
	}
	return parts[3], true
}

// appendEventList appends a JSON array of client events at positions seqs.
func (s *Server) appendEventList(b []byte, seqs []uint64, viewer, device string, now int64) ([]byte, error) {
	b = append(b, '[')
	for i, seq := range seqs {
		rec, err := s.store.Record(seq)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = appendClientEvent(b, rec, viewer, device, now)
	}
	return append(b, ']'), nil
}
