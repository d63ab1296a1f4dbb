package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"

	"engram/projections"
)

// maxToDeviceContent bounds one to-device message's content, as Synapse
// bounds EDUs (MAX_EDU_SIZE, 64 KiB): a larger one could never be sent over
// federation either.
const maxToDeviceContent = 65536

// sendToDevice serves PUT /sendToDevice/{eventType}/{txnId}. The send is
// one log record: '*' is expanded to the recipient's devices now, each
// device gets the message in its inbox, in log order, until it syncs past
// it. A repeated transaction ID of the same device answers {} again without
// sending twice.
func (s *Server) sendToDevice(r *Req) error {
	typ, txn := r.Param("eventType"), r.Param("txnId")
	var b struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	users := make([]string, 0, len(b.Messages))
	for u, devs := range b.Messages {
		users = append(users, u)
		for _, c := range devs {
			c = bytes.TrimSpace(c)
			if len(c) == 0 || c[0] != '{' {
				return errBadJSON("Each message content must be an object")
			}
			if len(c) > maxToDeviceContent {
				return merr(413, "M_TOO_LARGE", "To-device message too large")
			}
		}
	}
	sort.Strings(users)

	unlock := s.lockDevices([][2]string{{"txn\x00" + r.User, r.Device}})
	defer unlock()
	if _, err := s.store.ToDeviceTxn(r.User, r.Device, txn); err == nil {
		return r.json(struct{}{})
	} else if !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	rec := &projections.ToDeviceRecord{Sender: r.User, SenderDevice: r.Device, Type: typ, TxnID: txn}
	remote := map[string]map[string]map[string]json.RawMessage{}
	for _, u := range users {
		devs := b.Messages[u]
		if !s.accounts.isLocal(u) {
			if srv := serverOf(u); srv != "" {
				if remote[srv] == nil {
					remote[srv] = map[string]map[string]json.RawMessage{}
				}
				remote[srv][u] = devs
			}
			continue
		}
		msgs, err := s.toDeviceTargets(u, devs)
		if err != nil {
			return err
		}
		rec.Msgs = append(rec.Msgs, msgs...)
	}
	// Local and remote messages go in one append: the federation sender
	// delivers the remote ones from the log.
	bodies := []any{rec}
	servers := make([]string, 0, len(remote))
	for srv := range remote {
		servers = append(servers, srv)
	}
	sort.Strings(servers)
	for _, srv := range servers {
		rr, err := remoteToDeviceRecord(srv, r.User, r.Device, typ, txn, remote[srv])
		if err != nil {
			return err
		}
		bodies = append(bodies, rr)
	}
	if err := s.appendRecords(bodies...); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// toDeviceTargets expands one local recipient's messages (device ID or
// '*' to content) to the user's devices. An explicitly addressed device gets
// its own content even when '*' is present too; unknown devices are
// skipped, as in Synapse.
func (s *Server) toDeviceTargets(u string, devs map[string]json.RawMessage) ([]projections.ToDeviceMsg, error) {
	known, err := s.store.Devices(u)
	if err != nil {
		return nil, err
	}
	target := map[string]json.RawMessage{}
	for _, d := range known {
		if c, ok := devs[d.DeviceID]; ok {
			target[d.DeviceID] = c
		} else if c, ok := devs["*"]; ok {
			target[d.DeviceID] = c
		}
	}
	ids := make([]string, 0, len(target))
	for d := range target {
		ids = append(ids, d)
	}
	sort.Strings(ids)
	out := make([]projections.ToDeviceMsg, 0, len(ids))
	for _, d := range ids {
		c := append([]byte(nil), bytes.TrimSpace(target[d])...)
		out = append(out, projections.ToDeviceMsg{UserID: u, DeviceID: d, Content: c})
	}
	return out, nil
}
