package federation

import (
	"encoding/json"
	"sort"
	"sync"

	"engram/dag"
	"engram/log"
	"engram/projections"
)

// eduHandlers maps an EDU type to the functions that take it. Other areas
// (end-to-end encryption, for instance) register their EDU types with
// HandleEDU without touching the transaction handler.
type eduHandlers struct {
	mu sync.RWMutex
	m  map[string][]func(origin string, content json.RawMessage)
}

// HandleEDU registers fn for inbound EDUs of eduType. Several functions may
// be registered for one type; they run in registration order, on the
// goroutine that handles the transaction, after its PDUs. origin is the
// authenticated sending server; content is the EDU's content, unparsed.
// fn must not block for long and must not panic on any content (a panic is
// recovered and logged, and the EDU dropped).
func (f *Federation) HandleEDU(eduType string, fn func(origin string, content json.RawMessage)) {
	f.edus.mu.Lock()
	defer f.edus.mu.Unlock()
	if f.edus.m == nil {
		f.edus.m = map[string][]func(string, json.RawMessage){}
	}
	f.edus.m[eduType] = append(f.edus.m[eduType], fn)
}

type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// processEDUs dispatches a transaction's EDUs to the registered handlers.
// "Servers should ignore EDUs of unknown type."
func (f *Federation) processEDUs(origin string, raws []json.RawMessage) {
	for _, raw := range raws {
		var e edu
		if json.Unmarshal(raw, &e) != nil || e.Type == "" {
			continue
		}
		if e.Type == "m.typing" {
			var t struct {
				RoomID string `json:"room_id"`
			}
			if json.Unmarshal(e.Content, &t) != nil || !f.ServerAllowed(t.RoomID, origin) {
				continue
			}
		}
		f.edus.mu.RLock()
		fns := f.edus.m[e.Type]
		f.edus.mu.RUnlock()
		for _, fn := range fns {
			f.runEDU(origin, e, fn)
		}
	}
}

func (f *Federation) runEDU(origin string, e edu, fn func(string, json.RawMessage)) {
	defer func() {
		if p := recover(); p != nil {
			f.logger.Warn("EDU handler panicked", "type", e.Type, "origin", origin, "panic", p)
		}
	}()
	fn(origin, e.Content)
}

// maxPendingEDUs bounds the ephemeral EDUs waiting for one destination.
const maxPendingEDUs = 1000

// SendEDU queues an EDU for each destination. Typing and presence are
// ephemeral: the queue is in memory, bounded, and lost on restart.
func (f *Federation) SendEDU(dests []string, eduType string, content any) {
	c, err := json.Marshal(content)
	if err != nil {
		return
	}
	b, err := json.Marshal(edu{Type: eduType, Content: c})
	if err != nil {
		return
	}
	s := f.sender
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return
	}
	var poke []*worker
	for _, d := range dests {
		if d == "" || d == f.cfg.ServerName {
			continue
		}
		w := s.workers[d]
		if w == nil {
			s.startLocked(d, s.tailPos.Load())
			w = s.workers[d]
		}
		if len(w.edus) >= maxPendingEDUs {
			w.edus = w.edus[1:]
		}
		w.edus = append(w.edus, b)
		poke = append(poke, w)
	}
	s.mu.Unlock()
	for _, w := range poke {
		select {
		case w.poke <- struct{}{}:
		default:
		}
	}
}

// takeEDUs removes up to n pending EDUs of a worker.
func (s *Sender) takeEDUs(w *worker, n int) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, len(w.edus))
	if n <= 0 {
		return nil
	}
	out := append([]json.RawMessage(nil), w.edus[:n]...)
	w.edus = append(w.edus[:0], w.edus[n:]...)
	return out
}

// requeueEDUs puts EDUs of a failed transaction back in front.
func (s *Sender) requeueEDUs(w *worker, edus []json.RawMessage) {
	if len(edus) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w.edus = append(append([]json.RawMessage(nil), edus...), w.edus...)
	if len(w.edus) > maxPendingEDUs {
		w.edus = w.edus[len(w.edus)-maxPendingEDUs:]
	}
}

// ownReceipt decodes a record if it is a public read receipt of a local
// user (private receipts never leave the server).
func (s *Sender) ownReceipt(rec log.Record) *projections.ReceiptRecord {
	if rec.Kind != projections.KindReceipt {
		return nil
	}
	v, err := projections.Decode(rec)
	if err != nil {
		return nil
	}
	r, ok := v.(*projections.ReceiptRecord)
	if !ok || r.Type != projections.ReceiptRead || dag.ServerName(r.UserID) != s.f.cfg.ServerName {
		return nil
	}
	return r
}

// remoteToDevice returns rec if it holds to-device messages for another server.
func (s *Sender) remoteToDevice(rec log.Record) *projections.RemoteToDeviceRecord {
	if rec.Kind != projections.KindRemoteToDevice {
		return nil
	}
	v, err := projections.Decode(rec)
	if err != nil {
		return nil
	}
	t, _ := v.(*projections.RemoteToDeviceRecord)
	return t
}

// toDeviceEDU is the m.direct_to_device EDU of one record.
func toDeviceEDU(t *projections.RemoteToDeviceRecord) json.RawMessage {
	c, _ := json.Marshal(map[string]any{"sender": t.Sender, "type": t.Type, "message_id": t.MessageID,
		"messages": json.RawMessage(t.Messages)})
	b, _ := json.Marshal(edu{Type: "m.direct_to_device", Content: c})
	return b
}

// receiptEDU is the m.receipt EDU of one receipt.
func receiptEDU(r *projections.ReceiptRecord) json.RawMessage {
	data := map[string]any{"ts": r.TS}
	if r.ThreadID != "" {
		data["thread_id"] = r.ThreadID
	}
	content := map[string]any{r.RoomID: map[string]any{r.Type: map[string]any{r.UserID: map[string]any{
		"event_ids": []string{r.EventID}, "data": data}}}}
	c, _ := json.Marshal(content)
	b, _ := json.Marshal(edu{Type: "m.receipt", Content: c})
	return b
}

// roomServers lists the other servers with joined members in a room.
func (f *Federation) roomServers(room string) []string {
	ms, err := f.store.Members(room)
	if err != nil {
		return nil
	}
	seen := map[string]bool{f.cfg.ServerName: true, "": true}
	var out []string
	for _, m := range ms {
		if d := dag.ServerName(m.UserID); m.Membership == projections.MemberJoin && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func nonNil(x []json.RawMessage) []json.RawMessage {
	if x == nil {
		return []json.RawMessage{}
	}
	return x
}

func (s *Sender) hasEDUs(w *worker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(w.edus) > 0
}
