package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"engram/dag"
	"engram/log"
	"engram/projections"
)

// Sender is the outbound queue: one worker per destination reads the log
// from the last position delivered to it and sends this server's accepted
// events of rooms the destination has users in, in transactions of at most
// maxPDUs, retrying with exponential backoff. A tailer discovers new
// destinations. Positions are log records (projections.FedSentRecord).
type Sender struct {
	f       *Federation
	mu      sync.Mutex
	workers map[string]*worker
	done    chan struct{}
	wg      sync.WaitGroup
	started bool
	// tailPos is how far the tailer has looked for new destinations; a
	// worker started for EDUs begins there.
	tailPos atomic.Uint64
	epoch   int64
	txnSeq  atomic.Uint64
}

type worker struct {
	dest string
	pos  atomic.Uint64 // last log position delivered (or skipped); read by QueueStats
	poke chan struct{}
	// edus are ephemeral EDUs waiting to go (typing, presence), under
	// Sender.mu; bounded by maxPendingEDUs, oldest dropped first.
	edus []json.RawMessage
}

func newSender(f *Federation) *Sender {
	return &Sender{f: f, workers: map[string]*worker{}, done: make(chan struct{}), epoch: time.Now().UnixMilli()}
}

// Run starts the sender: a worker per known destination and the tailer.
func (f *Federation) Run() error {
	s := f.sender
	pos, err := f.store.FedSentPositions()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.started = true
	for dest, p := range pos {
		if dest != "" {
			s.startLocked(dest, p)
		}
	}
	s.mu.Unlock()
	s.tailPos.Store(pos[""])
	s.wg.Add(1)
	go s.tail(pos[""])
	return nil
}

func (s *Sender) stop() {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return
	}
	s.started = false
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
}

// wake pokes a destination's worker (dest "" pokes all).
func (s *Sender) wake(dest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, w := range s.workers {
		if dest == "" || d == dest {
			select {
			case w.poke <- struct{}{}:
			default:
			}
		}
	}
}

func (s *Sender) startLocked(dest string, pos uint64) {
	if _, ok := s.workers[dest]; ok {
		return
	}
	w := &worker{dest: dest, poke: make(chan struct{}, 1)}
	w.pos.Store(pos)
	s.workers[dest] = w
	s.wg.Add(1)
	go s.run(w)
}

// ownEvent decodes a record if it is an accepted event this server made.
func (s *Sender) ownEvent(rec log.Record) *projections.EventRecord {
	if rec.Kind != projections.KindEvent {
		return nil
	}
	v, err := projections.Decode(rec)
	if err != nil {
		return nil
	}
	ev, ok := v.(*projections.EventRecord)
	if !ok || ev.Status != projections.Accepted || dag.ServerName(ev.Sender) != s.f.cfg.ServerName {
		return nil
	}
	return ev
}

// destinations are the servers an event goes to: those with a joined member
// in its room, and the server of a membership event's target (so a kicked
// or banned server hears of it).
//
// rooms keeps the servers of each room for one pass over the log (a busy
// room would otherwise scan its members for every event); a membership
// event drops its room's entry.
func (s *Sender) destinations(ev *projections.EventRecord, rooms map[string]map[string]bool) []string {
	if ev.Type == "m.room.member" {
		delete(rooms, ev.RoomID)
	}
	servers, ok := rooms[ev.RoomID]
	if !ok {
		servers = map[string]bool{}
		if ms, err := s.f.store.Members(ev.RoomID); err == nil {
			for _, m := range ms {
				if m.Membership == projections.MemberJoin {
					servers[dag.ServerName(m.UserID)] = true
				}
			}
		}
		delete(servers, s.f.cfg.ServerName)
		delete(servers, "")
		rooms[ev.RoomID] = servers
	}
	out := make([]string, 0, len(servers)+1)
	for d := range servers {
		out = append(out, d)
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		if d := dag.ServerName(*ev.StateKey); d != s.f.cfg.ServerName && d != "" && !servers[d] {
			out = append(out, d)
		}
	}
	return out
}

var errStop = errors.New("stop")

// tail discovers destinations from new events and starts their workers.
func (s *Sender) tail(from uint64) {
	defer s.wg.Done()
	pos := from
	for {
		ch := s.f.log.Changed()
		last := s.f.log.Last()
		if last > pos {
			var recs []log.Record
			rooms := map[string]map[string]bool{}
			_ = s.f.log.Read(pos+1, func(seq uint64, rec log.Record) error {
				var dests []string
				if ev := s.ownEvent(rec); ev != nil {
					dests = s.destinations(ev, rooms)
				} else if r := s.ownReceipt(rec); r != nil {
					dests = s.f.roomServers(r.RoomID)
				} else if t := s.remoteToDevice(rec); t != nil {
					dests = []string{t.Server}
				} else {
					return nil
				}
				s.mu.Lock()
				var fresh []string
				for _, d := range dests {
					if _, ok := s.workers[d]; !ok && s.started {
						fresh = append(fresh, d)
						s.startLocked(d, seq-1)
					}
				}
				s.mu.Unlock()
				for _, d := range fresh {
					if r, err := projections.Encode(&projections.FedSentRecord{Dest: d, Pos: seq - 1}); err == nil {
						recs = append(recs, r)
					}
				}
				if len(fresh) > 0 {
					if r, err := projections.Encode(&projections.FedSentRecord{Dest: "", Pos: seq}); err == nil {
						recs = append(recs, r)
					}
				}
				return nil
			})
			if len(recs) > 0 {
				if _, err := s.f.log.Append(recs...); err != nil {
					s.f.logger.Error("federation sender: recording positions", "err", err)
				}
			}
			pos = last
			s.tailPos.Store(pos)
			s.wake("")
		}
		select {
		case <-s.done:
			return
		case <-ch:
		case <-time.After(5 * time.Second):
		}
	}
}

// run is one destination's delivery loop.
func (s *Sender) run(w *worker) {
	defer s.wg.Done()
	for {
		ch := s.f.log.Changed()
		if (s.f.log.Last() > w.pos.Load() || s.hasEDUs(w)) && !s.f.client.BackedOff(w.dest) {
			if err := s.deliver(w); err != nil {
				s.f.logger.Debug("federation send failed", "dest", w.dest, "err", err)
			}
			if (s.f.log.Last() > w.pos.Load() || s.hasEDUs(w)) && !s.f.client.BackedOff(w.dest) {
				continue
			}
		}
		wait := 5 * time.Second
		select {
		case <-s.done:
			return
		case <-ch:
		case <-w.poke:
		case <-time.After(wait):
		}
	}
}

// deliver sends the next transaction (if any) to w.dest.
func (s *Sender) deliver(w *worker) error {
	var pdus, receipts []json.RawMessage
	scanned := w.pos.Load()
	first := scanned + 1
	rooms := map[string]map[string]bool{}
	err := s.f.log.Read(first, func(seq uint64, rec log.Record) error {
		if ev := s.ownEvent(rec); ev != nil {
			for _, d := range s.destinations(ev, rooms) {
				if d == w.dest {
					pdus = append(pdus, json.RawMessage(ev.PDU))
					break
				}
			}
		} else if r := s.ownReceipt(rec); r != nil && len(receipts) < maxEDUs/2 {
			for _, d := range s.f.roomServers(r.RoomID) {
				if d == w.dest {
					receipts = append(receipts, receiptEDU(r))
					break
				}
			}
		} else if t := s.remoteToDevice(rec); t != nil && t.Server == w.dest && len(receipts) < maxEDUs/2 {
			receipts = append(receipts, toDeviceEDU(t)) // logged EDUs share the budget
		}
		scanned = seq
		if len(pdus) >= maxPDUs || len(receipts) >= maxEDUs/2 {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	edus := s.takeEDUs(w, maxEDUs-len(receipts))
	edus = append(receipts, edus...)
	if len(pdus) == 0 && len(edus) == 0 {
		w.pos.Store(scanned)
		return nil
	}
	txn := map[string]any{"origin": s.f.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": nonNil(pdus), "edus": edus}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Transaction IDs are unique per sending process: a retry after a
	// failure is a new transaction (PDUs are deduplicated by event ID).
	txnID := fmt.Sprintf("%d-%d-%d-%d", s.epoch, first, scanned, s.txnSeq.Add(1))
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := s.f.client.Do(ctx, w.dest, "PUT", "/_matrix/federation/v1/send/"+txnID, txn, &resp); err != nil {
		var he *HTTPError
		if errors.As(err, &he) && he.Status < 500 {
			// The destination refused the transaction itself: retrying
			// the same bytes will not help.
			s.f.logger.Warn("federation transaction refused", "dest", w.dest, "err", err)
		} else {
			if he != nil {
				s.f.client.failed(w.dest) // transport errors were counted by the client
			}
			s.requeueEDUs(w, edus[len(receipts):])
			return err
		}
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			s.f.logger.Debug("PDU refused", "dest", w.dest, "event", id, "err", r.Error)
		}
	}
	rec, err := projections.Encode(&projections.FedSentRecord{Dest: w.dest, Pos: scanned})
	if err != nil {
		return err
	}
	if _, err := s.f.log.Append(rec); err != nil {
		return err
	}
	w.pos.Store(scanned)
	return nil
}

// QueueStats are the outbound queue's depths, for metrics: the destinations
// with a worker, how many log records they are behind in all (what each
// still has to scan, most of it not for them), and ephemeral EDUs waiting.
type QueueStats struct {
	Destinations int
	Behind       uint64
	EDUs         int
}

// QueueStats reads the outbound queue's depths.
func (f *Federation) QueueStats() QueueStats {
	s := f.sender
	last := f.log.Last()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := QueueStats{Destinations: len(s.workers)}
	for _, w := range s.workers {
		if p := w.pos.Load(); p < last {
			st.Behind += last - p
		}
		st.EDUs += len(w.edus)
	}
	return st
}
