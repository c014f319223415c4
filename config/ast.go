package config

import (
	"cmp"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The decoder works on this small tree rather than on hclsyntax directly:
// every value is already evaluated (the language has no variables or
// functions) and keeps the range of the text that produced it, so the
// typed decoding below reports positions without touching HCL again.

type kind uint8

const (
	kNull kind = iota
	kString
	kNumber
	kBool
	kList
	kObject
)

func (k kind) String() string {
	return [...]string{"null", "a string", "a number", "a bool", "a list", "an object"}[k]
}

// pos32 and span are compact positions: a tree of 100,000 reals holds
// hundreds of thousands of them, and hcl.Range (with its file name and int
// fields) is nearly three times the size. The decoder knows the file.
type pos32 struct{ line, col, byte int32 }

type span struct{ start, end pos32 }

func spanOf(r hcl.Range) span {
	return span{
		pos32{int32(r.Start.Line), int32(r.Start.Column), int32(r.Start.Byte)},
		pos32{int32(r.End.Line), int32(r.End.Column), int32(r.End.Byte)},
	}
}

func spanBetween(a, b span) span { return span{a.start, b.end} }

// full is the span as an hcl.Range in file.
func (s span) full(file string) hcl.Range {
	return hcl.Range{
		Filename: file,
		Start:    hcl.Pos{Line: int(s.start.line), Column: int(s.start.col), Byte: int(s.start.byte)},
		End:      hcl.Pos{Line: int(s.end.line), Column: int(s.end.col), Byte: int(s.end.byte)},
	}
}

type value struct {
	kind  kind
	exact bool // num holds the literal exactly
	bool  bool
	str   string
	num   float64
	comp  *compound // list or object contents
	rng   span
}

// compound holds a list's items or an object's keys and values; kept
// behind a pointer so scalar values, nearly all of them, stay small.
type compound struct {
	elems []value  // list items, or object values
	keys  []string // object keys
}

func (v value) elems() []value {
	if v.comp == nil {
		return nil
	}
	return v.comp.elems
}

func (v value) keys() []string {
	if v.comp == nil {
		return nil
	}
	return v.comp.keys
}

// add appends an item (key is ignored for lists).
func (v *value) add(key string, el value) {
	if v.comp == nil {
		v.comp = &compound{}
	}
	if v.kind == kObject {
		v.comp.keys = append(v.comp.keys, key)
	}
	v.comp.elems = append(v.comp.elems, el)
}

type attr struct {
	name      string
	nameRange span
	val       value
}

type block struct {
	typ         string
	typeRange   span
	labels      []string
	labelRanges []span
	defRange    span // from the type to the opening brace
	body        *body
}

type body struct {
	attrs  []*attr // in file order
	blocks []*block
}

// convertBody turns a parsed hclsyntax body into the tree, evaluating each
// expression with no variables and no functions.
func convertBody(b *hclsyntax.Body, diags *hcl.Diagnostics) *body {
	out := &body{blocks: make([]*block, 0, len(b.Blocks))}
	out.attrs = make([]*attr, 0, len(b.Attributes))
	for _, a := range b.Attributes {
		out.attrs = append(out.attrs, &attr{name: a.Name, nameRange: spanOf(a.NameRange), val: convertExpr(a.Expr, diags)})
	}
	slices.SortFunc(out.attrs, func(x, y *attr) int { return cmp.Compare(x.nameRange.start.byte, y.nameRange.start.byte) })
	for _, bl := range b.Blocks {
		nb := &block{
			typ:       bl.Type,
			typeRange: spanOf(bl.TypeRange),
			labels:    bl.Labels,
			defRange:  spanOf(hcl.RangeBetween(bl.TypeRange, bl.OpenBraceRange)),
			body:      convertBody(bl.Body, diags),
		}
		for _, r := range bl.LabelRanges {
			nb.labelRanges = append(nb.labelRanges, spanOf(r))
		}
		out.blocks = append(out.blocks, nb)
	}
	return out
}

// convertExpr turns an expression into a value. Values are literal (see
// docs/config.md): a string without interpolation or directives, a number,
// a bool, null, or a list or object of those. Anything hclsyntax parses
// beyond that (arithmetic, conditionals, function calls, references,
// templates, for expressions, parentheses) is an error with a hint, not
// evaluated. fastParse accepts only literals, so this is the one place the
// rule is applied.
func convertExpr(e hclsyntax.Expression, diags *hcl.Diagnostics) value {
	full := e.Range()
	rng := spanOf(full)
	switch x := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return convertCty(x.Val, full, diags)
	case *hclsyntax.TemplateExpr:
		var sb strings.Builder
		for _, p := range x.Parts {
			lit, ok := p.(*hclsyntax.LiteralValueExpr)
			if !ok || lit.Val.Type() != cty.String {
				*diags = append(*diags, notLiteral(p, "Template not allowed",
					`write the text itself: "${...}" interpolation and "%{...}" directives are not expanded; write $${ or %%{ for the characters themselves`))
				return value{kind: kNull, rng: rng}
			}
			sb.WriteString(lit.Val.AsString())
		}
		return value{kind: kString, str: sb.String(), rng: rng}
	case *hclsyntax.TupleConsExpr:
		v := value{kind: kList, rng: rng}
		for _, el := range x.Exprs {
			v.add("", convertExpr(el, diags))
		}
		return v
	case *hclsyntax.ObjectConsExpr:
		v := value{kind: kObject, rng: rng}
		for _, it := range x.Items {
			key, ok := it.KeyExpr.(*hclsyntax.ObjectConsKeyExpr)
			if !ok || key.ForceNonLiteral {
				*diags = append(*diags, notLiteral(it.KeyExpr, "Invalid object key", `write the key itself, quoted, as in { "X-Probe" = "kglb" }`))
				continue
			}
			var k string
			if name := hcl.ExprAsKeyword(key.Wrapped); name != "" {
				k = name // a bare word, as in { X-Probe = "kglb" }
			} else {
				kv := convertExpr(key.Wrapped, diags)
				if kv.kind == kNull {
					continue
				}
				if kv.kind != kString {
					*diags = append(*diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid object key", Detail: "An object key must be a string.", Subject: it.KeyExpr.Range().Ptr(), Extra: hintText(hintObjectKey)})
					continue
				}
				k = kv.str
			}
			v.add(k, convertExpr(it.ValueExpr, diags))
		}
		return v
	case *hclsyntax.UnaryOpExpr:
		// -1 is a literal too: hclsyntax parses it as a negation.
		if lit, ok := x.Val.(*hclsyntax.LiteralValueExpr); ok && x.Op == hclsyntax.OpNegate && lit.Val.Type() == cty.Number {
			return convertCty(lit.Val.Negate(), full, diags)
		}
		*diags = append(*diags, notLiteral(e, "Expression not allowed", "write the value itself: operators are not evaluated"))
	case *hclsyntax.BinaryOpExpr:
		*diags = append(*diags, notLiteral(e, "Expression not allowed", "write the result itself, as in port = 8080: arithmetic and comparisons are not evaluated"))
	case *hclsyntax.ConditionalExpr:
		*diags = append(*diags, notLiteral(e, "Expression not allowed", "write the value itself: conditionals are not evaluated"))
	case *hclsyntax.ForExpr:
		*diags = append(*diags, notLiteral(e, "Expression not allowed", "write the list or object item by item: for expressions are not evaluated"))
	case *hclsyntax.ParenthesesExpr:
		*diags = append(*diags, notLiteral(e, "Expression not allowed", "remove the parentheses: write the value itself"))
	case *hclsyntax.FunctionCallExpr:
		*diags = append(*diags, notLiteral(e, "Function calls not allowed", hintFunctions))
	case *hclsyntax.ScopeTraversalExpr:
		*diags = append(*diags, notLiteral(e, "Variables not allowed", hintVariables))
	case *hclsyntax.TemplateWrapExpr:
		*diags = append(*diags, notLiteral(e, "Template not allowed", `write the value itself: "${...}" is not expanded`))
	default:
		*diags = append(*diags, notLiteral(e, "Expression not allowed", `write a literal value: "text", 42, true, [ ... ] or { ... }`))
	}
	return value{kind: kNull, rng: rng}
}

// notLiteral is the error for an expression where a literal value must be.
func notLiteral(e hclsyntax.Expression, summary, hint string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: "Values are literal: they are not evaluated.", Subject: e.Range().Ptr(), Extra: hintText(hint)}
}

func convertCty(cv cty.Value, full hcl.Range, diags *hcl.Diagnostics) value {
	rng := spanOf(full)
	if cv.IsNull() || !cv.IsWhollyKnown() {
		return value{kind: kNull, rng: rng}
	}
	cv, _ = cv.Unmark()
	ty := cv.Type()
	switch {
	case ty == cty.String:
		return value{kind: kString, str: cv.AsString(), rng: rng}
	case ty == cty.Bool:
		return value{kind: kBool, bool: cv.True(), rng: rng}
	case ty == cty.Number:
		bf := cv.AsBigFloat()
		f, acc := bf.Float64()
		return value{kind: kNumber, num: f, exact: acc == big.Exact, rng: rng}
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		v := value{kind: kList, rng: rng}
		for it := cv.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			v.add("", convertCty(ev, full, diags))
		}
		return v
	case ty.IsMapType() || ty.IsObjectType():
		v := value{kind: kObject, rng: rng}
		for it := cv.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			v.add(k.AsString(), convertCty(ev, full, diags))
		}
		return v
	}
	*diags = append(*diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported value", Detail: "This value has type " + ty.FriendlyName() + ".", Subject: full.Ptr(), Extra: hintText(hintSyntax)})
	return value{kind: kNull, rng: rng}
}

// describe names a value's kind for messages ("a string").
func (v value) describe() string {
	switch v.kind {
	case kString:
		return "the string " + quote(v.str)
	case kNumber:
		return "the number " + formatNum(v.num)
	}
	return v.kind.String()
}

// text is the value as written, for messages.
func (v value) text() string {
	switch v.kind {
	case kString:
		return quote(v.str)
	case kNumber:
		return formatNum(v.num)
	}
	return v.kind.String()
}

func formatNum(f float64) string {
	if math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func quote(s string) string {
	if r := []rune(s); len(r) > 60 {
		s = string(r[:57]) + "..."
	}
	return strings.TrimSpace(`"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`)
}
