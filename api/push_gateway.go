package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"engram/projections"
)

// The pusher pool delivers notifications to HTTP push gateways (push
// gateway API, POST /_matrix/push/v1/notify). Each pusher has a worker
// goroutine fed from the log: the push projection lists the user's
// notifications by log position, and the worker sends those after its
// position, in order, retrying a failed request with exponential backoff
// (a notification that still fails after maxAttempts is skipped). Its
// position is logged (KindPusherPos) when it catches up or every
// persistEvery notifications, so after a restart it resumes where it was:
// at least once, a notification delivered just before a crash may be sent
// again, and gateways deduplicate by event_id ("It is therefore necessary
// to perform duplicate suppression for such notifications using the
// event_id field"). Pushkeys the gateway rejects are removed ("Homeservers
// must cease sending notification requests for these pushkeys and remove
// the associated pushers").
type pusherPool struct {
	s *Server

	mu      sync.Mutex
	workers map[projections.PusherKey]*pusherWorker
	closed  bool

	client       *http.Client
	backoffBase  time.Duration
	backoffMax   time.Duration
	maxAttempts  int
	persistEvery int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type pusherWorker struct {
	key  projections.PusherKey
	mu   sync.Mutex
	p    projections.Pusher
	kick chan struct{}
	quit chan struct{}
}

func newPusherPool(s *Server, _ *syncHub) *pusherPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pusherPool{
		s:            s,
		workers:      map[projections.PusherKey]*pusherWorker{},
		client:       &http.Client{Timeout: 30 * time.Second},
		backoffBase:  time.Second,
		backoffMax:   10 * time.Minute,
		maxAttempts:  12,
		persistEvery: 100,
		ctx:          ctx,
		cancel:       cancel,
	}
}

func (pp *pusherPool) start() { pp.refresh() }

func (pp *pusherPool) close() {
	pp.mu.Lock()
	pp.closed = true
	for k, w := range pp.workers {
		close(w.quit)
		delete(pp.workers, k)
	}
	pp.mu.Unlock()
	pp.cancel()
	pp.wg.Wait()
}

// refresh starts, updates and stops workers to match the stored pushers.
func (pp *pusherPool) refresh() {
	all, err := pp.s.store.UserPushers("")
	if err != nil {
		pp.s.logger.Warn("pushers: list", "err", err)
		return
	}
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return
	}
	live := map[projections.PusherKey]bool{}
	for _, sp := range all {
		if sp.Kind != "http" {
			continue
		}
		live[sp.PusherKey] = true
		if w := pp.workers[sp.PusherKey]; w != nil {
			w.mu.Lock()
			pos := max(w.p.Pos, sp.Pos)
			w.p = sp.Pusher
			w.p.Pos = pos
			w.mu.Unlock()
			select {
			case w.kick <- struct{}{}:
			default:
			}
			continue
		}
		w := &pusherWorker{key: sp.PusherKey, p: sp.Pusher, kick: make(chan struct{}, 1), quit: make(chan struct{})}
		pp.workers[sp.PusherKey] = w
		pp.wg.Add(1)
		go pp.run(w)
	}
	for k, w := range pp.workers {
		if !live[k] {
			close(w.quit)
			delete(pp.workers, k)
		}
	}
}

// pushBatch bounds the notifications one scan of the worker takes.
const pushBatch = 50

func (pp *pusherPool) run(w *pusherWorker) {
	defer pp.wg.Done()
	s := pp.s
	w.mu.Lock()
	pos := w.p.Pos
	w.mu.Unlock()
	persisted, sinceSave := pos, 0
	save := func() {
		if pos == persisted {
			return
		}
		rec, err := projections.Encode(&projections.PusherPosRecord{PusherKey: w.key, Seq: pos})
		if err == nil {
			_, err = s.log.Append(rec)
		}
		if err != nil {
			s.logger.Debug("pushers: save position", "err", err)
			return
		}
		persisted, sinceSave = pos, 0
	}
	defer save()
	for {
		changed := s.log.Changed()
		// A pusher removed other than through the API (its device logged
		// out) stops here.
		if _, err := s.store.PusherByKey(w.key); errors.Is(err, projections.ErrNotFound) {
			pp.forget(w)
			return
		}
		type item struct {
			seq uint64
			n   projections.Notification
		}
		var batch []item
		err := s.store.Notifications(w.key.UserID, pos, s.log.Last(), false, func(seq uint64, n *projections.Notification) bool {
			batch = append(batch, item{seq, *n})
			return len(batch) < pushBatch
		})
		if err != nil {
			s.logger.Warn("pushers: read notifications", "user", w.key.UserID, "err", err)
		}
		for _, it := range batch {
			switch pp.deliver(w, it.seq, &it.n) {
			case deliverStop:
				return
			case deliverRejected:
				pos = it.seq
				pp.removeRejected(w)
				return
			}
			pos = it.seq
			if sinceSave++; sinceSave >= pp.persistEvery {
				save()
			}
		}
		if len(batch) == pushBatch {
			continue
		}
		save()
		select {
		case <-changed:
		case <-w.kick:
		case <-w.quit:
			return
		}
	}
}

type deliverResult int

const (
	deliverOK deliverResult = iota
	deliverRejected
	deliverStop
)

// deliver sends one notification, retrying with backoff. A notification
// that keeps failing is given up after maxAttempts.
func (pp *pusherPool) deliver(w *pusherWorker, seq uint64, n *projections.Notification) deliverResult {
	w.mu.Lock()
	p := w.p
	w.mu.Unlock()
	body, gw, err := pp.s.pushPayload(w.key, p, seq, n)
	if err != nil {
		pp.s.logger.Warn("pushers: build notification", "event", n.EventID, "err", err)
		return deliverOK
	}
	delay := pp.backoffBase
	for attempt := 1; ; attempt++ {
		rejected, err := pp.post(gw, body)
		if err == nil {
			for _, k := range rejected {
				if k == w.key.PushKey {
					return deliverRejected
				}
			}
			return deliverOK
		}
		if attempt >= pp.maxAttempts {
			pp.s.logger.Warn("pushers: giving up on a notification", "user", w.key.UserID, "event", n.EventID, "err", err)
			return deliverOK
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-w.quit:
			t.Stop()
			return deliverStop
		case <-pp.ctx.Done():
			t.Stop()
			return deliverStop
		}
		delay = min(delay*2, pp.backoffMax)
	}
}

// post sends one request to a gateway and returns the rejected pushkeys.
func (pp *pusherPool) post(gw string, body []byte) ([]string, error) {
	req, err := http.NewRequestWithContext(pp.ctx, "POST", gw, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := pp.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, fmt.Errorf("push gateway answered %d", res.StatusCode)
	}
	var out struct {
		Rejected []string `json:"rejected"`
	}
	json.Unmarshal(b, &out)
	return out.Rejected, nil
}

// forget drops a worker whose pusher is gone.
func (pp *pusherPool) forget(w *pusherWorker) {
	pp.mu.Lock()
	if pp.workers[w.key] == w {
		delete(pp.workers, w.key)
	}
	pp.mu.Unlock()
}

func (pp *pusherPool) removeRejected(w *pusherWorker) {
	rec, err := projections.Encode(&projections.PusherRecord{PusherKey: w.key})
	if err == nil {
		_, err = pp.s.log.Append(rec)
	}
	if err != nil {
		pp.s.logger.Warn("pushers: remove rejected pusher", "err", err)
	}
	pp.s.logger.Info("pushers: gateway rejected pushkey; pusher removed", "user", w.key.UserID, "app_id", w.key.AppID)
	go pp.refresh()
}

// pushPayload builds the notify request for one notification and returns
// it with the gateway URL.
func (s *Server) pushPayload(key projections.PusherKey, p projections.Pusher, seq uint64, n *projections.Notification) ([]byte, string, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(p.Data, &data); err != nil {
		return nil, "", err
	}
	var gw, format string
	json.Unmarshal(data["url"], &gw)
	json.Unmarshal(data["format"], &format)
	if gw == "" {
		return nil, "", errors.New("pusher has no url")
	}
	delete(data, "url")
	tweaks := map[string]any{}
	var actions []json.RawMessage
	json.Unmarshal(n.Actions, &actions)
	for _, a := range actions {
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			continue
		}
		if len(t.Value) == 0 {
			tweaks[t.SetTweak] = true
		} else {
			tweaks[t.SetTweak] = t.Value
		}
	}
	rec, err := s.store.Record(seq)
	if err != nil {
		return nil, "", err
	}
	var v pduView
	json.Unmarshal(rec.PDU, &v)
	unread, err := s.store.UnreadTotal(key.UserID)
	if err != nil {
		return nil, "", err
	}
	counts := map[string]any{}
	if unread > 0 {
		counts["unread"] = unread // "Counts whose value is zero should be omitted."
	}
	prio := "low"
	if _, hl := tweaks["highlight"]; hl || v.Type == "m.room.encrypted" || tweaks["sound"] != nil {
		prio = "high"
	}
	note := map[string]any{
		"event_id": rec.EventID, "room_id": rec.RoomID, "counts": counts, "prio": prio,
		"devices": []map[string]any{{"app_id": key.AppID, "pushkey": key.PushKey, "pushkey_ts": p.TS / 1000,
			"data": data, "tweaks": tweaks}},
	}
	if format != "event_id_only" {
		note["type"], note["sender"] = v.Type, v.Sender
		if len(v.Content) > 0 {
			note["content"] = v.Content
		}
		if v.StateKey != nil && v.Type == "m.room.member" {
			note["user_is_target"] = *v.StateKey == key.UserID
		}
		if name := s.stateField(rec.RoomID, "m.room.member", v.Sender, "displayname"); name != "" {
			note["sender_display_name"] = name
		}
		if name := s.stateField(rec.RoomID, "m.room.name", "", "name"); name != "" {
			note["room_name"] = name
		}
		if alias := s.stateField(rec.RoomID, "m.room.canonical_alias", "", "alias"); alias != "" {
			note["room_alias"] = alias
		}
	}
	b, err := json.Marshal(map[string]any{"notification": note})
	return b, gw, err
}

// stateField returns a string field of the content of a current state
// event ("" if absent).
func (s *Server) stateField(room, typ, sk, field string) string {
	id, err := s.store.StateEvent(room, typ, sk)
	if err != nil {
		return ""
	}
	rec, _, err := s.store.Event(id)
	if err != nil {
		return ""
	}
	var v struct {
		Content map[string]any `json:"content"`
	}
	if json.Unmarshal(rec.PDU, &v) != nil {
		return ""
	}
	str, _ := v.Content[field].(string)
	return str
}
