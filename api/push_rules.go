package api

import (
	"encoding/json"
	"strings"

	"engram/projections"
)

// Push rules API (client-server-api, "Push Rules: API"). The server
// defaults are code (projections/push_default.json); a user's own rules and
// changes to defaults are logged as a whole state per change
// (KindPushRules), which projections.Push folds and evaluates on every
// event, and projections.AccountData turns into an m.push_rules account
// data change for /sync.

func (s *Server) pushRuleRoutes() {
	rt := &s.rt
	rt.client("GET", "/pushrules", authed, s.getAllPushRules)
	rt.client("GET", "/pushrules/global", authed, s.getGlobalPushRules)
	rt.client("GET", "/pushrules/global/{kind}", authed, s.getPushRuleKind)
	rt.client("GET", "/pushrules/global/{kind}/{ruleId}", authed, s.getPushRule)
	rt.client("PUT", "/pushrules/global/{kind}/{ruleId}", authed, s.putPushRule)
	rt.client("DELETE", "/pushrules/global/{kind}/{ruleId}", authed, s.deletePushRule)
	rt.client("GET", "/pushrules/global/{kind}/{ruleId}/enabled", authed, s.getPushRuleAttr("enabled"))
	rt.client("PUT", "/pushrules/global/{kind}/{ruleId}/enabled", authed, s.putPushRuleAttr("enabled"))
	rt.client("GET", "/pushrules/global/{kind}/{ruleId}/actions", authed, s.getPushRuleAttr("actions"))
	rt.client("PUT", "/pushrules/global/{kind}/{ruleId}/actions", authed, s.putPushRuleAttr("actions"))
}

// userRuleset returns a user's full ruleset, defaults merged.
func (s *Server) userRuleset(user string) (projections.PushRuleset, error) {
	u, err := s.store.PushRules(user)
	if err != nil {
		return projections.PushRuleset{}, err
	}
	return u.Ruleset(user), nil
}

// pushRulesContent is the content of the m.push_rules account data event
// ("The content of the event is the current push rules for the user").
func (s *Server) pushRulesContent(user string) ([]byte, error) {
	rs, err := s.userRuleset(user)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"global": rs})
}

func (s *Server) getAllPushRules(r *Req) error {
	b, err := s.pushRulesContent(r.User)
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}

func (s *Server) getGlobalPushRules(r *Req) error {
	rs, err := s.userRuleset(r.User)
	if err != nil {
		return err
	}
	return r.json(rs)
}

func (s *Server) getPushRuleKind(r *Req) error {
	rs, err := s.userRuleset(r.User)
	if err != nil {
		return err
	}
	rules, ok := rs.Kind(r.Param("kind"))
	if !ok {
		return errInvalid("Unknown push rule kind " + r.Param("kind"))
	}
	return r.json(*rules)
}

// findRule returns a rule of the merged ruleset.
func (s *Server) findRule(r *Req) (projections.PushRule, *Error, error) {
	rs, err := s.userRuleset(r.User)
	if err != nil {
		return projections.PushRule{}, nil, err
	}
	rules, ok := rs.Kind(r.Param("kind"))
	if !ok {
		return projections.PushRule{}, errInvalid("Unknown push rule kind " + r.Param("kind")), nil
	}
	for _, rule := range *rules {
		if rule.RuleID == r.Param("ruleId") {
			return rule, nil, nil
		}
	}
	return projections.PushRule{}, errNotFound("The push rule was not found."), nil
}

func (s *Server) getPushRule(r *Req) error {
	rule, e, err := s.findRule(r)
	if err != nil {
		return err
	}
	if e != nil {
		return e
	}
	return r.json(rule)
}

// changeRules applies change to the user's stored rules under the user's
// lock and logs the new state.
func (s *Server) changeRules(user string, change func(u *projections.UserPushRules) *Error) error {
	defer lockUser(user)()
	u, err := s.store.PushRules(user)
	if err != nil {
		return err
	}
	if e := change(u); e != nil {
		return e
	}
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	rec, err := projections.Encode(&projections.PushRulesRecord{UserID: user, Rules: b})
	if err != nil {
		return err
	}
	_, err = s.log.Append(rec)
	return err
}

func (s *Server) putPushRule(r *Req) error {
	kind, id := r.Param("kind"), r.Param("ruleId")
	var tmp projections.PushRuleset
	if _, ok := tmp.Kind(kind); !ok {
		return errInvalid("Unknown push rule kind " + kind)
	}
	switch {
	case id == "":
		return errInvalid("Missing rule ID")
	case strings.HasPrefix(id, "."):
		return errInvalid("Rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(id, `/\`):
		return errInvalid("Rule IDs cannot contain '/' or '\\'")
	}
	var body struct {
		Actions    *[]json.RawMessage           `json:"actions"`
		Conditions *[]projections.PushCondition `json:"conditions"`
		Pattern    *string                      `json:"pattern"`
	}
	if e := r.decode(&body); e != nil {
		return e
	}
	if body.Actions == nil {
		return errMissing("Missing actions")
	}
	if err := projections.ValidatePushActions(*body.Actions); err != nil {
		return errInvalid("Invalid actions: " + err.Error())
	}
	rule := projections.PushRule{RuleID: id, Enabled: true, Actions: *body.Actions}
	switch kind {
	case "content":
		if body.Pattern == nil {
			return errMissing("Content rules need a pattern")
		}
		rule.Pattern = body.Pattern
	case "override", "underride":
		conds := []projections.PushCondition{}
		if body.Conditions != nil {
			conds = *body.Conditions
		}
		for _, c := range conds {
			if c.Kind == "" {
				return errInvalid("Every condition needs a kind")
			}
		}
		rule.Conditions = &conds
	}
	before, after := r.Query("before"), r.Query("after")
	for _, rel := range []string{before, after} {
		if strings.HasPrefix(rel, ".") {
			return errInvalid("Cannot add a rule relative to a server-default rule")
		}
	}
	err := s.changeRules(r.User, func(u *projections.UserPushRules) *Error {
		rules, _ := u.Rules.Kind(kind)
		list := *rules
		pos := -1
		for i, x := range list {
			if x.RuleID == id {
				pos = i
				rule.Enabled = x.Enabled
			}
		}
		if pos >= 0 && before == "" && after == "" {
			list[pos] = rule
			*rules = list
			return nil
		}
		if pos >= 0 {
			list = append(list[:pos:pos], list[pos+1:]...)
		}
		at := 0 // new rules are "the most important user defined rule among rules of the same kind"
		if rel := before; rel != "" || after != "" {
			// "If both after and before are provided, the new or updated
			// rule must be the next most important rule with respect to
			// the rule identified by before."
			delta := 0
			if rel == "" {
				rel, delta = after, 1
			}
			at = -1
			for i, x := range list {
				if x.RuleID == rel {
					at = i + delta
				}
			}
			if at < 0 {
				return merr(400, "M_UNKNOWN", "before/after rule not found: "+rel)
			}
		}
		list = append(list[:at:at], append([]projections.PushRule{rule}, list[at:]...)...)
		*rules = list
		return nil
	})
	if err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) deletePushRule(r *Req) error {
	kind, id := r.Param("kind"), r.Param("ruleId")
	var tmp projections.PushRuleset
	if _, ok := tmp.Kind(kind); !ok {
		return errInvalid("Unknown push rule kind " + kind)
	}
	if _, ok := projections.DefaultPushRule(kind, id); ok {
		return errInvalid("Cannot delete a server-default rule")
	}
	err := s.changeRules(r.User, func(u *projections.UserPushRules) *Error {
		rules, _ := u.Rules.Kind(kind)
		for i, x := range *rules {
			if x.RuleID == id {
				*rules = append((*rules)[:i:i], (*rules)[i+1:]...)
				return nil
			}
		}
		return errNotFound("The push rule was not found.")
	})
	if err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) getPushRuleAttr(attr string) handler {
	return func(r *Req) error {
		rule, e, err := s.findRule(r)
		if err != nil {
			return err
		}
		if e != nil {
			return e
		}
		if attr == "enabled" {
			return r.json(map[string]bool{"enabled": rule.Enabled})
		}
		return r.json(map[string]any{"actions": rule.Actions})
	}
}

func (s *Server) putPushRuleAttr(attr string) handler {
	return func(r *Req) error {
		kind, id := r.Param("kind"), r.Param("ruleId")
		if _, e, err := s.findRule(r); err != nil || e != nil {
			if err != nil {
				return err
			}
			return e
		}
		var body struct {
			Enabled *bool              `json:"enabled"`
			Actions *[]json.RawMessage `json:"actions"`
		}
		if e := r.decode(&body); e != nil {
			return e
		}
		if attr == "enabled" && body.Enabled == nil {
			return errMissing("Missing enabled")
		}
		if attr == "actions" {
			if body.Actions == nil {
				return errMissing("Missing actions")
			}
			if err := projections.ValidatePushActions(*body.Actions); err != nil {
				return errInvalid("Invalid actions: " + err.Error())
			}
		}
		_, isDefault := projections.DefaultPushRule(kind, id)
		err := s.changeRules(r.User, func(u *projections.UserPushRules) *Error {
			if isDefault {
				if u.Defaults == nil {
					u.Defaults = map[string]projections.DefaultRuleChange{}
				}
				ch := u.Defaults[kind+"/"+id]
				if attr == "enabled" {
					ch.Enabled = body.Enabled
				} else {
					ch.Actions = body.Actions
				}
				u.Defaults[kind+"/"+id] = ch
				return nil
			}
			rules, _ := u.Rules.Kind(kind)
			for i := range *rules {
				if (*rules)[i].RuleID == id {
					if attr == "enabled" {
						(*rules)[i].Enabled = *body.Enabled
					} else {
						(*rules)[i].Actions = *body.Actions
					}
					return nil
				}
			}
			return errNotFound("The push rule was not found.")
		})
		if err != nil {
			return err
		}
		return r.json(struct{}{})
	}
}
