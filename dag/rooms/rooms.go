// Package rooms is the sequencer: the one place where events join a room's
// DAG. Per room and in order, it picks prev_events (the forward extremities)
// and auth_events, builds and signs the event, checks it against the room's
// current state with the authorization rules, and submits the record to the
// log. The room's in-memory state moves on at submit time, so the next event
// can be sequenced while the previous one is still being made durable; the
// log keeps submit order, and a failed commit makes the whole log read-only,
// so memory never runs ahead of a log that will not catch up.
//
// Callers are answered only once their event is durable.
package rooms

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"engram/dag"
	"engram/log"
	"engram/projections"
	"engram/stateres"
)

var (
	// ErrUnknownRoom: the server does not know the room.
	ErrUnknownRoom = errors.New("rooms: unknown room")
	// ErrBadEvent: the event cannot be built (too large, bad content).
	ErrBadEvent = errors.New("rooms: bad event")
)

// ForbiddenError is an event the authorization rules refuse.
type ForbiddenError struct{ Err error }

func (e *ForbiddenError) Error() string { return "rooms: forbidden: " + e.Err.Error() }
func (e *ForbiddenError) Unwrap() error { return e.Err }

// Config is the server identity events are signed with.
type Config struct {
	ServerName string
	KeyID      string
	Key        ed25519.PrivateKey
	// Now returns the time for origin_server_ts; time.Now if nil.
	Now func() time.Time
}

// Sequencer sequences events into rooms.
type Sequencer struct {
	cfg   Config
	log   *log.Log
	store *projections.Store

	mu    sync.Mutex
	rooms map[string]*room

	// txnDone counts, per stripe of transaction IDs, the sends with a
	// transaction that finished (see Send).
	txnDone [txnStripes]atomic.Uint64
	// txns knows the transactions that were certainly never stored, so a
	// new one (nearly every send) skips the store lookup.
	txns *txnFilter
}

const txnStripes = 1024

func txnStripe(txn string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(txn); i++ {
		h = (h ^ uint32(txn[i])) * 16777619
	}
	return int(h % txnStripes)
}

// New returns a sequencer appending to l and loading rooms from store.
func New(cfg Config, l *log.Log, store *projections.Store) *Sequencer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sequencer{cfg: cfg, log: l, store: store, rooms: map[string]*room{}, txns: newTxnFilter()}
}

// room is a room's sequencing state: current state and forward extremities,
// kept in memory while the room is loaded. mu orders the room's events.
type room struct {
	mu          sync.Mutex
	id          string
	version     *dag.RoomVersion
	state       map[dag.StateKeyTuple]*dag.Event
	extremities map[string]int64 // event ID -> depth
	pendingTxn  map[string]string
	// createRec holds a new room's create record until the room's first
	// events are submitted together.
	createRec log.Record
	// turn is closed when the room's latest sequenced event has been
	// submitted to the log: the next one waits for it (see Send).
	turn chan struct{}
}

// closedTurn is the turn of a room with nothing in flight.
var closedTurn = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Event is what a client asks to send. Room is empty for the events that
// follow a create event in CreateRoom (the room ID may derive from it).
type Event struct {
	Room     string
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// Txn makes the send idempotent: a repeat returns the first event's ID.
	Txn string
}

// Result is a sequenced, durable event.
type Result struct {
	EventID string
	Seq     uint64
}

func (s *Sequencer) now() int64 { return s.cfg.Now().UnixMilli() }

// load returns the room, loading it from the projections on first use.
func (s *Sequencer) load(id string) (*room, error) {
	s.mu.Lock()
	r, ok := s.rooms[id]
	if !ok {
		r = &room{id: id}
		s.rooms[id] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	if r.version != nil {
		return r, nil
	}
	if err := s.fill(r); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	return r, nil
}

// fill reads a room's state and extremities from the projections. Called
// with r.mu held.
func (s *Sequencer) fill(r *room) error {
	vid, err := s.store.RoomVersion(r.id)
	if errors.Is(err, projections.ErrNotFound) {
		return ErrUnknownRoom
	}
	if err != nil {
		return err
	}
	ver := dag.Version(vid)
	if ver == nil {
		return fmt.Errorf("rooms: room %s has unknown version %q", r.id, vid)
	}
	entries, err := s.store.CurrentState(r.id, "")
	if err != nil {
		return err
	}
	state := make(map[dag.StateKeyTuple]*dag.Event, len(entries))
	for _, e := range entries {
		rec, _, err := s.store.Event(e.EventID)
		if err != nil {
			return fmt.Errorf("rooms: state event %s: %w", e.EventID, err)
		}
		ev, err := dag.ParseEvent(rec.PDU, ver)
		if err != nil {
			return fmt.Errorf("rooms: state event %s: %w", e.EventID, err)
		}
		state[dag.StateKeyTuple{Type: e.Type, StateKey: e.StateKey}] = ev
	}
	ext, err := s.store.Extremities(r.id)
	if err != nil {
		return err
	}
	r.version, r.state, r.extremities, r.pendingTxn, r.turn = ver, state, ext, map[string]string{}, closedTurn
	return nil
}

// Send sequences one event into an existing room and waits until it is durable.
//
// A repeated transaction answers the first send's event. Whether the
// transaction was stored is read before the room lock, which every sender
// of the room waits for: the read is as long as the rest of the critical
// section. A send of the same transaction that finishes between that read
// and the lock is no longer pending when the lock is taken, but it moved
// its stripe's counter first (txnDone): then the read is made again.
//
// The first read is skipped when the transaction filter knows the
// transaction was never stored: a send puts its transaction into the
// filter after it is durable and before it moves its counter, so the
// filter answers as the read would have (see txnFilter).
func (s *Sequencer) Send(e Event) (Result, error) {
	var done0 uint64
	if e.Txn != "" {
		done0 = s.txnDone[txnStripe(e.Txn)].Load()
		if s.txns.mayHave(e.Txn, s.store.TxnKeys) {
			if id, err := s.store.TxnEvent(e.Txn); err == nil {
				return s.waitFor(id)
			}
		}
	}
	r, err := s.load(e.Room)
	if err != nil {
		return Result{}, err
	}
	if e.Txn != "" {
		if id, ok := r.pendingTxn[e.Txn]; ok {
			r.mu.Unlock()
			return s.waitFor(id)
		}
		if s.txnDone[txnStripe(e.Txn)].Load() != done0 {
			if id, err := s.store.TxnEvent(e.Txn); err == nil {
				r.mu.Unlock()
				return s.waitFor(id)
			}
		}
	}
	ev, err := s.prepare(r, e, 0)
	if err != nil {
		r.mu.Unlock()
		return Result{}, err
	}
	s.advance(r, ev)
	if e.Txn != "" {
		r.pendingTxn[e.Txn] = ev.ID
	}
	// Take a turn: this event is submitted after the room's previous one
	// and before its next, whatever order the signatures finish in.
	prevTurn, myTurn := r.turn, make(chan struct{})
	r.turn = myTurn
	r.mu.Unlock()

	rec, err := s.seal(ev, e.Txn)
	<-prevTurn
	if err != nil {
		// Unreachable with a key that signed at startup; the room's memory
		// is ahead of the log now, so drop it and reload on next use.
		close(myTurn)
		s.forget(r)
		return Result{}, err
	}
	p := s.log.Submit(rec)
	close(myTurn)

	seq, err := p.Wait()
	if e.Txn != "" {
		// Durable (its transaction row readable) before it stops being
		// pending, and filed and counted in between (see above).
		s.txns.add(e.Txn)
		s.txnDone[txnStripe(e.Txn)].Add(1)
		r.mu.Lock()
		delete(r.pendingTxn, e.Txn)
		r.mu.Unlock()
	}
	if err != nil {
		return Result{}, err
	}
	return Result{EventID: ev.ID, Seq: seq}, nil
}

// waitFor answers a repeated transaction: once the first send is durable,
// its event ID.
func (s *Sequencer) waitFor(id string) (Result, error) {
	for i := 0; i < 1000; i++ {
		if seq, _, err := s.store.EventPos(id); err == nil && seq <= s.log.Last() {
			return Result{EventID: id, Seq: seq}, nil
		}
		select {
		case <-s.log.Changed():
		case <-time.After(10 * time.Millisecond):
		}
	}
	return Result{}, fmt.Errorf("rooms: transaction event %s never became durable", id)
}

// CreateRoom sequences a new room: events[0] must be its m.room.create; the
// rest (creator's join, power levels, presets, initial state, invites) follow
// in order. It returns the room ID once all are durable.
func (s *Sequencer) CreateRoom(version string, events []Event) (string, error) {
	ver := dag.Version(version)
	if ver == nil {
		return "", fmt.Errorf("%w: unsupported room version %q", ErrBadEvent, version)
	}
	if len(events) == 0 || events[0].Type != "m.room.create" {
		return "", fmt.Errorf("%w: a room starts with m.room.create", ErrBadEvent)
	}
	r, err := s.claimRoom(ver, events[0])
	if err != nil {
		return "", err
	}
	defer r.mu.Unlock()
	recs := make([]log.Record, 0, len(events))
	for _, e := range events[1:] {
		e.Room = r.id
		ev, err := s.prepare(r, e, 0)
		if err != nil {
			s.forget(r)
			return "", err
		}
		rec, err := s.seal(ev, e.Txn)
		if err != nil {
			s.forget(r)
			return "", err
		}
		recs = append(recs, rec)
		s.advance(r, ev)
	}
	_, err = s.log.Submit(append([]log.Record{r.createRec}, recs...)...).Wait()
	for _, e := range events {
		if e.Txn != "" {
			s.txns.add(e.Txn)
		}
	}
	if err != nil {
		return "", err
	}
	r.createRec = log.Record{}
	return r.id, nil
}

// claimRoom builds a room's create event and registers the room, locked. In
// v12 the room ID is the create event's reference hash, and the only entropy
// in a create event is origin_server_ts: two identical rooms created by the
// same user in the same millisecond would collide, so on a collision the
// timestamp is moved on a millisecond and the event rebuilt (Synapse does
// the same).
func (s *Sequencer) claimRoom(ver *dag.RoomVersion, create Event) (*room, error) {
	for bump := int64(0); bump < 64; bump++ {
		r := &room{version: ver, state: map[dag.StateKeyTuple]*dag.Event{}, extremities: map[string]int64{}, pendingTxn: map[string]string{}, turn: closedTurn}
		if !ver.RoomIDFromCreate {
			r.id = s.newRoomID()
		}
		create.Room = r.id
		ev, err := s.prepare(r, create, bump)
		if err != nil {
			return nil, err
		}
		rec, err := s.seal(ev, create.Txn)
		if err != nil {
			return nil, err
		}
		r.id = ev.RoomID
		if _, err := s.store.RoomVersion(r.id); err == nil {
			continue
		}
		s.mu.Lock()
		if _, taken := s.rooms[r.id]; taken {
			s.mu.Unlock()
			continue
		}
		r.mu.Lock()
		s.rooms[r.id] = r
		s.mu.Unlock()
		s.advance(r, ev)
		r.createRec = rec
		return r, nil
	}
	return nil, fmt.Errorf("rooms: no free room ID after 64 attempts")
}

// forget drops a room whose creation failed before anything was appended.
func (s *Sequencer) forget(r *room) {
	s.mu.Lock()
	delete(s.rooms, r.id)
	s.mu.Unlock()
}

// prepare makes and auth-checks the next event of r, unsigned; tsBump
// moves origin_server_ts on (see claimRoom). Called with r.mu held: it is
// the short critical section (prev/auth selection, hashing, auth rules).
func (s *Sequencer) prepare(r *room, e Event, tsBump int64) (*dag.Event, error) {
	prev, depth := r.prevEvents()
	needed := stateres.AuthEventsNeeded(r.version, e.Type, e.StateKey, e.Sender, e.Content)
	auth := make([]string, 0, len(needed))
	authState := &authSet{}
	for _, k := range needed {
		if ev, ok := r.state[k]; ok {
			authState.set(k, ev)
			if k.Type == "m.room.create" && r.version.RoomIDFromCreate {
				continue // v12: implied by the room ID, never listed
			}
			auth = append(auth, ev.ID)
		}
	}
	if c, ok := r.state[dag.StateKeyTuple{Type: "m.room.create"}]; ok {
		authState.set(c.Key(), c)
	}
	p := dag.ProtoEvent{
		RoomID: r.id, Sender: e.Sender, Type: e.Type, StateKey: e.StateKey, Content: e.Content,
		PrevEvents: prev, AuthEvents: auth, Depth: depth, OriginServerTS: s.now() + tsBump, Redacts: e.Redacts,
	}
	ev, err := dag.Prepare(p, r.version, s.cfg.ServerName)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := stateres.Allowed(ev, authState); err != nil {
		return nil, &ForbiddenError{Err: err}
	}
	return ev, nil
}

// authSet is the auth state of one event: the few entries the auth rules
// read, in a small array where a map cost an allocation per send and more
// to fill than to search. Past its array it spills into a map.
type authSet struct {
	n     int
	keys  [8]dag.StateKeyTuple
	evs   [8]*dag.Event
	spill stateres.StateEvents
}

// set adds or replaces an entry, as a map assignment would.
func (a *authSet) set(k dag.StateKeyTuple, ev *dag.Event) {
	for i := 0; i < a.n; i++ {
		if a.keys[i] == k {
			a.evs[i] = ev
			return
		}
	}
	if a.n < len(a.keys) {
		a.keys[a.n], a.evs[a.n] = k, ev
		a.n++
		return
	}
	if a.spill == nil {
		a.spill = stateres.StateEvents{}
	}
	a.spill[k] = ev
}

// Get implements stateres.AuthState.
func (a *authSet) Get(k dag.StateKeyTuple) *dag.Event {
	for i := 0; i < a.n; i++ {
		if a.keys[i] == k {
			return a.evs[i]
		}
	}
	return a.spill[k]
}

// seal signs a prepared event and encodes its log record. It runs outside
// the room lock: the ed25519 signature is the most expensive step of a send.
// The room keeps the unsigned event for auth checks; the signed bytes go
// only into the record, so nothing shared is mutated here.
func (s *Sequencer) seal(prepared *dag.Event, txn string) (log.Record, error) {
	ev := *prepared
	if err := ev.Sign(s.cfg.ServerName, s.cfg.KeyID, s.cfg.Key); err != nil {
		return log.Record{}, err
	}
	rec := &projections.EventRecord{
		RoomID: ev.RoomID, EventID: ev.ID, RoomVersion: ev.Version.ID, Type: ev.Type, StateKey: ev.StateKey,
		Sender: ev.Sender, Redacts: ev.Redacts, PrevEvents: ev.PrevEvents, Depth: ev.Depth,
		Status: projections.Accepted, Txn: txn, PDU: ev.Raw,
	}
	if ev.Type == "m.room.member" {
		rec.Membership = membershipOf(ev.Content)
	}
	return projections.Encode(rec)
}

// maxPrevEvents caps how many extremities one event merges.
const maxPrevEvents = 10

// prevEvents returns the extremities to reference (deepest first, capped) and
// the new event's depth.
func (r *room) prevEvents() ([]string, int64) {
	if len(r.extremities) == 0 {
		return []string{}, 1
	}
	if len(r.extremities) == 1 { // a quiet or locally busy room: nothing to sort
		for id, d := range r.extremities {
			return []string{id}, d + 1
		}
	}
	ids := make([]string, 0, len(r.extremities))
	for id := range r.extremities {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		di, dj := r.extremities[ids[i]], r.extremities[ids[j]]
		if di != dj {
			return di > dj
		}
		return ids[i] < ids[j]
	})
	if len(ids) > maxPrevEvents {
		ids = ids[:maxPrevEvents]
	}
	var depth int64
	for _, id := range ids {
		depth = max(depth, r.extremities[id])
	}
	return ids, depth + 1
}

// advance moves the room's in-memory view past an accepted event.
func (s *Sequencer) advance(r *room, ev *dag.Event) {
	for _, p := range ev.PrevEvents {
		delete(r.extremities, p)
	}
	r.extremities[ev.ID] = ev.Depth
	if ev.IsState() {
		r.state[ev.Key()] = ev
	}
}

func membershipOf(content json.RawMessage) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Membership
}
