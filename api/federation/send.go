package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"

	"engram/dag"
	"engram/projections"
	"engram/stateres"
)

// Transaction limits: "Transactions are limited in size; they can have at
// most 50 PDUs and 100 EDUs."
const (
	maxPDUs = 50
	maxEDUs = 100
)

type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

// handleSend is PUT /_matrix/federation/v1/send/{txnId}.
func (f *Federation) handleSend(r *req) error {
	var t transaction
	if err := json.Unmarshal(r.body, &t); err != nil {
		return ferr(400, "M_BAD_JSON", "Invalid transaction")
	}
	if len(t.PDUs) > maxPDUs || len(t.EDUs) > maxEDUs {
		return ferr(400, "M_TOO_LARGE", "Too many PDUs or EDUs in the transaction")
	}
	// Transactions are deduplicated per origin: a retry gets the first answer.
	key := r.origin + "\x00" + r.param("txnId")
	f.txnMu.Lock()
	if b, ok := f.txns[key]; ok {
		f.txnMu.Unlock()
		r.raw(200, b)
		return nil
	}
	f.txnMu.Unlock()
	results := f.processPDUs(r.origin, t.PDUs)
	f.processEDUs(r.origin, t.EDUs)
	b, err := json.Marshal(map[string]any{"pdus": results})
	if err != nil {
		return err
	}
	f.txnMu.Lock()
	f.txns[key] = b
	f.txnQ = append(f.txnQ, key)
	if len(f.txnQ) > 10000 {
		delete(f.txns, f.txnQ[0])
		f.txnQ = f.txnQ[1:]
	}
	f.txnMu.Unlock()
	r.raw(200, b)
	return nil
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

// parsePDU reads a PDU of a room this server knows.
func (f *Federation) parsePDU(raw []byte) (*dag.Event, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("federation: PDU is not a JSON object: %w", err)
	}
	vid, err := f.store.RoomVersion(head.RoomID)
	if err != nil {
		return nil, fmt.Errorf("federation: unknown room %q", head.RoomID)
	}
	ver := dag.Version(vid)
	if ver == nil {
		return nil, fmt.Errorf("federation: room version %q unsupported", vid)
	}
	return dag.ParseEvent(raw, ver)
}

// verifyAll checks signatures and hashes of events in parallel; failed
// events come back nil with their error.
func (f *Federation) verifyAll(evs []*dag.Event) ([]*dag.Event, []error) {
	out := make([]*dag.Event, len(evs))
	errs := make([]error, len(evs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, ev := range evs {
		if ev == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f.safely(func() error {
				var err error
				out[i], err = f.keys.VerifyEvent(ev)
				return err
			})
		}()
	}
	wg.Wait()
	return out, errs
}

// processPDUs runs every PDU of a transaction through the checks and the
// sequencer and answers per event ID. Rooms are processed in parallel,
// each room's events in depth order.
func (f *Federation) processPDUs(origin string, raws []json.RawMessage) map[string]pduResult {
	results := map[string]pduResult{}
	var mu sync.Mutex
	set := func(id string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			results[id] = pduResult{Error: err.Error()}
		} else {
			results[id] = pduResult{}
		}
	}
	parsed := make([]*dag.Event, 0, len(raws))
	for _, raw := range raws {
		ev, err := f.parsePDU(raw)
		if err != nil {
			// Without a room version there is no event ID to answer under.
			f.logger.Debug("dropping PDU", "origin", origin, "err", err)
			continue
		}
		parsed = append(parsed, ev)
	}
	verified, errs := f.verifyAll(parsed)
	byRoom := map[string][]*dag.Event{}
	var roomOrder []string
	for i, ev := range verified {
		if ev == nil {
			set(parsed[i].ID, errs[i])
			continue
		}
		if !f.ServerAllowed(ev.RoomID, origin) {
			set(ev.ID, errors.New("federation: the sending server is banned from the room by its ACL"))
			continue
		}
		if _, ok := byRoom[ev.RoomID]; !ok {
			roomOrder = append(roomOrder, ev.RoomID)
		}
		byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
	}
	var wg sync.WaitGroup
	for _, room := range roomOrder {
		evs := byRoom[room]
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth < evs[j].Depth })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, ev := range evs {
				set(ev.ID, f.safely(func() error { return f.receive(origin, ev) }))
			}
		}()
	}
	wg.Wait()
	return results
}

// safely runs fn on a goroutine of a request's own: a panic there would
// not reach the handler's recover and would end the process.
func (f *Federation) safely(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			f.logger.Error("federation: panic", "panic", p)
			err = fmt.Errorf("federation: internal error")
		}
	}()
	return fn()
}

// receive sequences one verified PDU: missing prev_events are fetched with
// /get_missing_events and missing auth events with /event first.
func (f *Federation) receive(origin string, ev *dag.Event) error {
	f.fillGap(origin, ev)
	res, err := f.rooms.Receive(ev)
	var me *stateres.MissingEventsError
	if errors.As(err, &me) {
		if ferr := f.fetchOutliers(origin, ev.Version, me.IDs); ferr != nil {
			return err
		}
		res, err = f.rooms.Receive(ev)
	}
	if err != nil {
		return err
	}
	if res.Status == projections.Rejected {
		return fmt.Errorf("rejected: %s", res.Reason)
	}
	return nil
}

// fillGap fetches prev_events the server does not hold: "the receiving
// server should [...] use /get_missing_events to fill the gap".
func (f *Federation) fillGap(origin string, ev *dag.Event) {
	missing := false
	for _, p := range ev.PrevEvents {
		if !f.rooms.Known(p) {
			missing = true
			break
		}
	}
	if !missing {
		return
	}
	ext, err := f.store.Extremities(ev.RoomID)
	if err != nil {
		return
	}
	earliest := make([]string, 0, len(ext))
	for id := range ext {
		earliest = append(earliest, id)
	}
	sort.Strings(earliest)
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := map[string]any{"earliest_events": earliest, "latest_events": []string{ev.ID}, "limit": 50, "min_depth": 0}
	if err := f.client.Do(ctx, origin, "POST", "/_matrix/federation/v1/get_missing_events/"+pathEscape(ev.RoomID), body, &resp); err != nil {
		f.logger.Debug("get_missing_events failed", "origin", origin, "err", err)
		return
	}
	var evs []*dag.Event
	for _, raw := range resp.Events {
		e, err := dag.ParseEvent(raw, ev.Version)
		if err != nil || e.RoomID != ev.RoomID {
			continue
		}
		evs = append(evs, e)
	}
	verified, _ := f.verifyAll(evs)
	sort.SliceStable(verified, func(i, j int) bool {
		if verified[i] == nil || verified[j] == nil {
			return verified[j] == nil && verified[i] != nil
		}
		return verified[i].Depth < verified[j].Depth
	})
	for _, e := range verified {
		if e == nil || e.ID == ev.ID {
			continue
		}
		res, err := f.rooms.Receive(e)
		var me *stateres.MissingEventsError
		if errors.As(err, &me) {
			if f.fetchOutliers(origin, e.Version, me.IDs) == nil {
				res, err = f.rooms.Receive(e)
			}
		}
		if err != nil {
			f.logger.Debug("missing event not sequenced", "event", e.ID, "err", err)
			continue
		}
		_ = res
	}
}

// fetchOutliers fetches events by ID from a server (with their auth
// chains, recursively, up to a bound) and stores them as outliers.
func (f *Federation) fetchOutliers(origin string, ver *dag.RoomVersion, ids []string) error {
	var got []*dag.Event
	seen := map[string]bool{}
	queue := append([]string(nil), ids...)
	for len(queue) > 0 && len(seen) < 500 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		if _, _, err := f.store.EventPos(id); err == nil {
			continue
		}
		ev, err := f.fetchEvent(origin, ver, id)
		if err != nil {
			return err
		}
		got = append(got, ev)
		queue = append(queue, ev.AuthEvents...)
	}
	return f.rooms.StoreOutliers(got)
}

// fetchEvent gets one event with GET /event/{eventId} and verifies it.
func (f *Federation) fetchEvent(origin string, ver *dag.RoomVersion, id string) (*dag.Event, error) {
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.client.Do(ctx, origin, "GET", "/_matrix/federation/v1/event/"+pathEscape(id), nil, &resp); err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("federation: /event answered %d PDUs", len(resp.PDUs))
	}
	ev, err := dag.ParseEvent(resp.PDUs[0], ver)
	if err != nil {
		return nil, err
	}
	if ev.ID != id {
		return nil, fmt.Errorf("federation: asked for %s, got %s", id, ev.ID)
	}
	return f.keys.VerifyEvent(ev)
}
