package projections

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Push rules: their JSON shapes, the server-default ruleset, how a user's
// changes merge with it, and their evaluation against an event (spec:
// client-server-api, "Push Rules").

// PushCondition is one condition of an override or underride rule.
type PushCondition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// PushRule is a push rule as the push rules API shows it. Conditions is set
// for override and underride rules (even when empty), Pattern for content
// rules.
type PushRule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions *[]PushCondition  `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
}

// PushRuleset is one scope of push rules ("global"), by kind, each kind in
// priority order.
type PushRuleset struct {
	Override  []PushRule `json:"override"`
	Content   []PushRule `json:"content"`
	Room      []PushRule `json:"room"`
	Sender    []PushRule `json:"sender"`
	Underride []PushRule `json:"underride"`
}

// PushRuleKinds are the kinds in the order they are checked.
var PushRuleKinds = []string{"override", "content", "room", "sender", "underride"}

// Kind returns the rules of a kind (nil, false for an unknown kind).
func (rs *PushRuleset) Kind(kind string) (*[]PushRule, bool) {
	switch kind {
	case "override":
		return &rs.Override, true
	case "content":
		return &rs.Content, true
	case "room":
		return &rs.Room, true
	case "sender":
		return &rs.Sender, true
	case "underride":
		return &rs.Underride, true
	}
	return nil, false
}

// DefaultRuleChange is a user's change to a server-default rule: only
// enabled and actions may change ("PUT .../enabled", "PUT .../actions").
type DefaultRuleChange struct {
	Enabled *bool              `json:"enabled,omitempty"`
	Actions *[]json.RawMessage `json:"actions,omitempty"`
}

// UserPushRules is what is stored per user: the user-defined rules, and
// changes to server-default rules keyed by "kind/ruleID". The server
// defaults themselves are not stored, so a server that learns new default
// rules applies them to every user.
type UserPushRules struct {
	Rules    PushRuleset                  `json:"rules"`
	Defaults map[string]DefaultRuleChange `json:"defaults,omitempty"`
}

// UserPlaceholder stands for the user's ID in the server-default rules.
const UserPlaceholder = "@USER@"

// The server-default rules, as the spec defines them ("Predefined Rules"),
// with @USER@ standing for the user's ID.
//
//go:embed push_default.json
var defaultPushRulesJSON []byte

var defaultPushRules = func() PushRuleset {
	var v struct {
		Global PushRuleset `json:"global"`
	}
	if err := json.Unmarshal(defaultPushRulesJSON, &v); err != nil {
		panic("projections: bad push_default.json: " + err.Error())
	}
	return v.Global
}()

// DefaultPushRule returns a server-default rule by kind and ID.
func DefaultPushRule(kind, id string) (PushRule, bool) {
	rs := defaultPushRules
	rules, ok := rs.Kind(kind)
	if !ok {
		return PushRule{}, false
	}
	for _, r := range *rules {
		if r.RuleID == id {
			return r, true
		}
	}
	return PushRule{}, false
}

// Ruleset merges a user's rules with the server defaults, in priority
// order: ".m.rule.master ... has always a higher priority than any other
// rule"; otherwise server-default rules "operate at a lower priority than
// user-defined rules" of the same kind. user replaces @USER@ ("" keeps it).
func (u *UserPushRules) Ruleset(user string) PushRuleset {
	var out PushRuleset
	def := defaultPushRules
	for _, kind := range PushRuleKinds {
		dst, _ := out.Kind(kind)
		defs, _ := def.Kind(kind)
		var mine []PushRule
		if u != nil {
			m, _ := u.Rules.Kind(kind)
			mine = *m
		}
		list := make([]PushRule, 0, len(*defs)+len(mine))
		rest := *defs
		if kind == "override" && len(rest) > 0 && rest[0].RuleID == ".m.rule.master" {
			list = append(list, u.applyDefault(kind, rest[0], user))
			rest = rest[1:]
		}
		for _, r := range mine {
			list = append(list, normalizeRule(kind, r))
		}
		for _, r := range rest {
			list = append(list, u.applyDefault(kind, r, user))
		}
		*dst = list
	}
	return out
}

func (u *UserPushRules) applyDefault(kind string, r PushRule, user string) PushRule {
	r = normalizeRule(kind, substituteUser(r, user))
	if u == nil {
		return r
	}
	if ch, ok := u.Defaults[kind+"/"+r.RuleID]; ok {
		if ch.Enabled != nil {
			r.Enabled = *ch.Enabled
		}
		if ch.Actions != nil {
			r.Actions = *ch.Actions
		}
	}
	return r
}

// normalizeRule gives a rule the members its kind shows: conditions (never
// null) for override and underride, nothing else for room and sender.
func normalizeRule(kind string, r PushRule) PushRule {
	switch kind {
	case "override", "underride":
		if r.Conditions == nil {
			r.Conditions = &[]PushCondition{}
		}
		r.Pattern = nil
	case "content":
		r.Conditions = nil
	default:
		r.Conditions, r.Pattern = nil, nil
	}
	if r.Actions == nil {
		r.Actions = []json.RawMessage{}
	}
	return r
}

func substituteUser(r PushRule, user string) PushRule {
	if user == "" || r.Conditions == nil {
		return r
	}
	conds := make([]PushCondition, len(*r.Conditions))
	copy(conds, *r.Conditions)
	for i := range conds {
		c := &conds[i]
		if c.Pattern != nil && *c.Pattern == UserPlaceholder {
			p := user
			c.Pattern = &p
		}
		if string(c.Value) == `"`+UserPlaceholder+`"` {
			c.Value, _ = json.Marshal(user)
		}
	}
	r.Conditions = &conds
	return r
}

// ParseUserPushRules decodes a stored push rules state (nil for none).
func ParseUserPushRules(b []byte) (*UserPushRules, error) {
	if len(b) == 0 {
		return &UserPushRules{}, nil
	}
	var u UserPushRules
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, fmt.Errorf("projections: push rules: %w", err)
	}
	return &u, nil
}

// ValidatePushActions checks a rule's actions: strings notify (and the
// historical dont_notify and coalesce, which are ignored) or set_tweak
// objects.
func ValidatePushActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return fmt.Errorf("unknown action %q", s)
		}
		var o map[string]json.RawMessage
		if json.Unmarshal(a, &o) != nil {
			return errors.New("an action must be a string or an object")
		}
		var tweak string
		if json.Unmarshal(o["set_tweak"], &tweak) != nil || tweak == "" {
			return errors.New("an action object needs set_tweak")
		}
	}
	return nil
}

// ---- evaluation ----

type condKind uint8

const (
	condUnknown condKind = iota
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
)

// compiledCond is a condition ready to evaluate.
type compiledCond struct {
	kind     condKind
	path     []string
	re       *regexp.Regexp // event_match
	literal  string         // event_match on a whole value without wildcards (re nil)
	userEq   bool           // the pattern or value is the user's ID (default rules' @USER@)
	value    any            // event_property_is / event_property_contains
	cmp      string         // room_member_count
	count    int64
	permKey  string // sender_notification_permission
	userDeps bool   // the result depends on the user evaluated for
}

type compiledRule struct {
	id        string
	conds     []*compiledCond
	notify    bool
	highlight bool
	actions   []byte // the JSON array, without historical actions
}

// flags are the entry flags of a matching rule's outcome.
func (r *compiledRule) flags() byte {
	f := byte(0)
	if r.notify {
		f |= entryNotify
	}
	if r.highlight {
		f |= entryHighlight
	}
	return f
}

// compiledRules are a user's enabled rules in priority order.
type compiledRules []compiledRule

func compileRuleset(rs PushRuleset) compiledRules {
	var out compiledRules
	for _, kind := range PushRuleKinds {
		rules, _ := rs.Kind(kind)
		for _, r := range *rules {
			if !r.Enabled {
				continue
			}
			out = append(out, compileRule(kind, r))
		}
	}
	return out
}

func compileRule(kind string, r PushRule) compiledRule {
	cr := compiledRule{id: r.RuleID}
	switch kind {
	case "override", "underride":
		if r.Conditions != nil {
			for _, c := range *r.Conditions {
				cr.conds = append(cr.conds, compileCond(c, r.Default))
			}
		}
	case "content":
		p := ""
		if r.Pattern != nil {
			p = *r.Pattern
		}
		cr.conds = []*compiledCond{compileCond(PushCondition{Kind: "event_match", Key: "content.body", Pattern: &p}, false)}
	case "room":
		cr.conds = []*compiledCond{{kind: condPropertyIs, path: []string{"room_id"}, value: r.RuleID}}
	case "sender":
		cr.conds = []*compiledCond{{kind: condPropertyIs, path: []string{"sender"}, value: r.RuleID}}
	}
	acts := make([]json.RawMessage, 0, len(r.Actions))
	for _, a := range r.Actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s == "notify" {
				cr.notify = true
				acts = append(acts, a)
			}
			continue // dont_notify, coalesce: "MUST ignore these actions"
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil {
			continue
		}
		if t.SetTweak == "highlight" {
			// "If a highlight tweak is given with no value, its value is
			// defined to be true."
			cr.highlight = len(t.Value) == 0 || string(t.Value) == "true"
		}
		acts = append(acts, a)
	}
	cr.actions, _ = json.Marshal(acts)
	return cr
}

func compileCond(c PushCondition, isDefault bool) *compiledCond {
	cc := &compiledCond{}
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil || c.Key == "" {
			return cc
		}
		cc.kind, cc.path = condEventMatch, splitPath(c.Key)
		if isDefault && *c.Pattern == UserPlaceholder {
			cc.userEq, cc.userDeps = true, true
			return cc
		}
		if words := c.Key == "content.body"; !words && !strings.ContainsAny(*c.Pattern, "*?") {
			// The common case ("type" is "m.room.message"): the regexp
			// would match the whole value ignoring case, as EqualFold does.
			cc.literal = *c.Pattern
			return cc
		}
		re, err := globRegexp(*c.Pattern, c.Key == "content.body")
		if err != nil {
			cc.kind = condUnknown
			return cc
		}
		cc.re = re
	case "event_property_is", "event_property_contains":
		if c.Key == "" || len(c.Value) == 0 {
			return cc
		}
		v, ok := scalarJSON(c.Value)
		if !ok {
			return cc
		}
		cc.kind, cc.path, cc.value = condPropertyIs, splitPath(c.Key), v
		if c.Kind == "event_property_contains" {
			cc.kind = condPropertyContains
		}
		if s, ok := v.(string); ok && isDefault && s == UserPlaceholder {
			cc.userEq, cc.userDeps = true, true
		}
	case "contains_display_name":
		cc.kind, cc.userDeps = condDisplayName, true
	case "room_member_count":
		cmp, n, ok := parseMemberCount(c.Is)
		if ok {
			cc.kind, cc.cmp, cc.count = condMemberCount, cmp, n
		}
	case "sender_notification_permission":
		if c.Key != "" {
			cc.kind, cc.permKey = condSenderPermission, c.Key
		}
	}
	// Anything else: "Unrecognised conditions MUST NOT match any events".
	return cc
}

// parseMemberCount parses room_member_count's is: "A decimal integer
// optionally prefixed by one of, ==, <, >, >= or <=".
func parseMemberCount(is string) (string, int64, bool) {
	cmp := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			cmp, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	return cmp, n, err == nil
}

// splitPath splits a dot-separated property path: "\." is a literal dot
// and "\\" a literal backslash (appendices, "Dot-separated property paths").
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// scalarJSON decodes a condition value: only strings, integers, booleans
// and null are supported.
func scalarJSON(raw json.RawMessage) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	switch x := v.(type) {
	case nil, string, bool:
		return v, true
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return nil, false
		}
		return n, true
	}
	return nil, false
}

// scalarEqual compares an event value (decoded with UseNumber) with a
// condition value: exactly, without casting types.
func scalarEqual(ev, want any) bool {
	switch w := want.(type) {
	case nil:
		return ev == nil
	case string:
		s, ok := ev.(string)
		return ok && s == w
	case bool:
		b, ok := ev.(bool)
		return ok && b == w
	case int64:
		n, ok := ev.(json.Number)
		if !ok {
			return false
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		return err == nil && v == w && v > -(1<<53) && v < 1<<53
	}
	return false
}

const wordChars = "A-Za-z0-9_"

var globCache = struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}{m: map[string]*regexp.Regexp{}}

// globRegexp compiles a glob ("*" any run, "?" one character) into a
// case-insensitive regexp matching a whole value or, for content.body, any
// substring that "starts and ends at a word boundary ... any character not
// in the sets [A-Z], [a-z], [0-9] or _". Go regexps run in linear time, so
// no pattern can make evaluation slow.
func globRegexp(glob string, words bool) (*regexp.Regexp, error) {
	return patternRegexp(glob, words, false)
}

// patternRegexp is globRegexp, or with literal the same for a plain string
// (a display name, in which "*" and "?" are themselves).
func patternRegexp(glob string, words, literal bool) (*regexp.Regexp, error) {
	key := "f"
	if words {
		key = "w"
	}
	if literal {
		key += "l"
	}
	key += glob
	globCache.Lock()
	re, ok := globCache.m[key]
	globCache.Unlock()
	if ok {
		return re, nil
	}
	var b strings.Builder
	if words {
		b.WriteString(`(?s)(?:\A|[^` + wordChars + `])(?i:`)
	} else {
		b.WriteString(`(?s)\A(?i:`)
	}
	for _, r := range glob {
		switch {
		case literal:
			b.WriteString(regexp.QuoteMeta(string(r)))
		case r == '*':
			b.WriteString(".*")
		case r == '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		b.WriteString(`)(?:[^` + wordChars + `]|\z)`)
	} else {
		b.WriteString(`)\z`)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, err
	}
	globCache.Lock()
	if len(globCache.m) > 4096 {
		globCache.m = map[string]*regexp.Regexp{}
	}
	globCache.m[key] = re
	globCache.Unlock()
	return re, nil
}

// pushEvent is what evaluating rules against one event needs, shared by
// every user evaluated for it.
type pushEvent struct {
	ev          map[string]any // eventView (nil: a plain event); the rest of pdu on demand
	rec         *EventRecord   // type, sender, room_id, state_key (nil: from ev)
	pdu         []byte
	full        bool
	memberCount int64
	senderPower int64
	notifLevel  func(key string) int64
	memo        []condResult // conditions that do not depend on the user, evaluated
	memoBuf     [24]condResult
	// anon evaluates for a user the event does not name: every condition
	// on the user's ID fails (the default outcome of unnamed members).
	anon bool
}

// viewKeys are the top-level members eventView fills.
var viewKeys = map[string]bool{"type": true, "sender": true, "state_key": true, "room_id": true, "content": true, "origin_server_ts": true}

func (pe *pushEvent) lookup(path []string) (any, bool) {
	if pe.rec != nil && len(path) == 1 {
		switch path[0] {
		case "type":
			return pe.rec.Type, true
		case "sender":
			return pe.rec.Sender, true
		case "room_id":
			return pe.rec.RoomID, true
		case "state_key":
			if pe.rec.StateKey == nil {
				return nil, false
			}
			return *pe.rec.StateKey, true
		}
	}
	if pe.ev == nil {
		return nil, false // a plain event: the record's members only
	}
	if len(path) > 0 && !viewKeys[path[0]] && !pe.full && pe.pdu != nil {
		// A rule looks at another member of the event: parse it all.
		pe.full = true
		dec := json.NewDecoder(bytes.NewReader(pe.pdu))
		dec.UseNumber()
		var all map[string]any
		if dec.Decode(&all) == nil {
			for k, v := range all {
				if !viewKeys[k] {
					pe.ev[k] = v
				}
			}
		}
	}
	var cur any = pe.ev
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// match returns the first enabled rule that matches for user (nil if none).
func (pe *pushEvent) match(rules compiledRules, user, displayName string) *compiledRule {
	for i := range rules {
		r := &rules[i]
		ok := true
		for _, c := range r.conds {
			if !pe.cond(c, user, displayName) {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// condResult is a memoised condition: a short list searched in order is
// cheaper than a map for the dozen conditions of a ruleset.
type condResult struct {
	c *compiledCond
	v bool
}

func (pe *pushEvent) cond(c *compiledCond, user, displayName string) bool {
	if !c.userDeps {
		for _, m := range pe.memo {
			if m.c == c {
				return m.v
			}
		}
		v := pe.evalCond(c, user, displayName)
		if pe.memo == nil {
			pe.memo = pe.memoBuf[:0]
		}
		pe.memo = append(pe.memo, condResult{c, v})
		return v
	}
	return pe.evalCond(c, user, displayName)
}

func (pe *pushEvent) evalCond(c *compiledCond, user, displayName string) bool {
	if c.userEq && pe.anon {
		return false
	}
	switch c.kind {
	case condEventMatch:
		v, ok := pe.lookup(c.path)
		s, isStr := v.(string)
		if !ok || !isStr {
			// "If the property ... does not have a string value, then the
			// condition will not match, even if pattern is *."
			return false
		}
		if c.userEq {
			return strings.EqualFold(s, user)
		}
		if c.re == nil {
			return strings.EqualFold(s, c.literal)
		}
		return c.re.MatchString(s)
	case condPropertyIs:
		v, ok := pe.lookup(c.path)
		if !ok {
			return false
		}
		if c.userEq {
			return scalarEqual(v, user)
		}
		return scalarEqual(v, c.value)
	case condPropertyContains:
		v, ok := pe.lookup(c.path)
		arr, isArr := v.([]any)
		if !ok || !isArr {
			return false
		}
		want := c.value
		if c.userEq {
			want = user
		}
		for _, x := range arr {
			if scalarEqual(x, want) {
				return true
			}
		}
		return false
	case condDisplayName:
		if displayName == "" {
			return false
		}
		body, _ := pe.lookup([]string{"content", "body"})
		s, ok := body.(string)
		if !ok {
			return false
		}
		re, err := patternRegexp(displayName, true, true)
		return err == nil && re.MatchString(s)
	case condMemberCount:
		n := pe.memberCount
		switch c.cmp {
		case "<":
			return n < c.count
		case ">":
			return n > c.count
		case "<=":
			return n <= c.count
		case ">=":
			return n >= c.count
		}
		return n == c.count
	case condSenderPermission:
		return pe.senderPower >= pe.notifLevel(c.permKey)
	}
	return false
}

// infinitePower is the power of a room's creators in room versions where
// "creators have infinite power level" (v12).
const infinitePower = math.MaxInt64
