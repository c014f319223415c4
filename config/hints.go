package config

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The hints of syntax errors. HCL's parser says what is wrong in English
// only; the hint is chosen from what the parser met instead, read off the
// file's tokens: the token at the error, the one before it, and the
// brackets open around it (syntaxHint).
const (
	hintSyntax          = "see docs/config.md for the syntax: name = value, and blocks as type \"label\" { ... }"
	hintLine            = `each line is an attribute (name = value) or a block (type "label" { ... })`
	hintCloseBrace      = "add the missing closing brace }"
	hintCloseBracket    = "add the missing closing bracket ]"
	hintCharacter       = "remove the character, or quote the value"
	hintOwnLine         = "put each attribute on its own line"
	hintBraceOwnLine    = "put the closing brace } on its own line"
	hintCloseString     = `close the string with a double quote "`
	hintCloseHeredoc    = "end the heredoc with its marker (such as EOT) alone on a line"
	hintLiteral         = `write a literal value: "text", 42, true, [ ... ] or { ... }`
	hintOnce            = "set each attribute once; remove one of them"
	hintListComma       = "separate list items with commas"
	hintBlockHeader     = `write a block as type "label" { on one line, with the body on the next lines`
	hintHeredoc         = "use a heredoc (<<EOT ... EOT) for text on several lines"
	hintOperator        = "write the value itself"
	hintKeyValue        = `separate each key from its value with =, such as { "X-Probe" = "kglb" }`
	hintBareName        = "attribute names are bare words such as port"
	hintOneLineBlock    = "close the block on the same line, as in real \"10.1.0.11\" { weight = 2 }, or put the attribute on its own line"
	hintNumber          = `quote addresses and other text, as in vip = "198.51.100.10"`
	hintComma           = "remove the comma: an attribute ends at the end of its line"
	hintObjectSeparator = `separate the items of an object with commas or newlines, as in { "X-Probe" = "kglb", "X-Env" = "prod" }`
	hintEscape          = `write a backslash as \\; the escapes are \n, \r, \t, \", \\ and \uNNNN`
	hintVariables       = `the configuration has no variables: write the value itself, quoted if it is text ("tcp")`
	hintFunctions       = "the configuration has no functions: write the value itself"
	hintObjectKey       = `quote the key, as in { "X-Probe" = "kglb" }`
)

// open is a bracket open at the error: its token, and for a brace whether it
// opens an object (a value) rather than a block's body.
type open struct {
	tok    hclsyntax.Token
	object bool
	keyed  bool // in an object: the current item has its = (or :) already
}

// syntaxHint is the hint for HCL's syntax error d in src, keyed on the
// tokens around d's subject; "" when src is unknown.
func syntaxHint(toks hclsyntax.Tokens, d *hcl.Diagnostic) string {
	if d.Subject == nil || len(toks) == 0 {
		return ""
	}
	pos := d.Subject.Start.Byte
	// The brackets open before the error, innermost last.
	var stack []open
	i := 0
	for ; i < len(toks) && toks[i].Range.Start.Byte < pos; i++ {
		t := toks[i]
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			stack = append(stack, open{tok: t, object: t.Type == hclsyntax.TokenOBrace && valueStart(toks, i)})
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case hclsyntax.TokenEqual, hclsyntax.TokenColon:
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].keyed = true
			}
		case hclsyntax.TokenComma, hclsyntax.TokenNewline:
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].keyed = false
			}
		}
	}
	if i == len(toks) {
		return ""
	}
	at := toks[i]
	var prev, prevAny hclsyntax.Token // the token before at, not a newline / any
	for j := i - 1; j >= 0; j-- {
		if j == i-1 {
			prevAny = toks[j]
		}
		if toks[j].Type != hclsyntax.TokenNewline {
			prev = toks[j]
			break
		}
	}
	var inner *open
	if n := len(stack); n > 0 {
		inner = &stack[n-1]
	}
	inBody := inner == nil || (inner.tok.Type == hclsyntax.TokenOBrace && !inner.object)

	switch at.Type {
	case hclsyntax.TokenInvalid, hclsyntax.TokenBadUTF8, hclsyntax.TokenNil:
		return hintCharacter
	case hclsyntax.TokenBitwiseAnd, hclsyntax.TokenBitwiseOr, hclsyntax.TokenBitwiseNot, hclsyntax.TokenBitwiseXor, hclsyntax.TokenStarStar, hclsyntax.TokenApostrophe, hclsyntax.TokenBacktick, hclsyntax.TokenSemicolon, hclsyntax.TokenTabs:
		return hintOperator
	case hclsyntax.TokenQuotedNewline:
		// HCL reports a string broken by a newline twice, at the same
		// token: as a string to close (with the string as context), and as
		// text that wants a heredoc.
		if d.Context != nil {
			return hintCloseString
		}
		return hintHeredoc
	case hclsyntax.TokenQuotedLit:
		return hintEscape
	case hclsyntax.TokenEOF:
		if inner == nil {
			return ""
		}
		switch inner.tok.Type {
		case hclsyntax.TokenOBrace:
			return hintCloseBrace
		case hclsyntax.TokenOBrack:
			return hintCloseBracket
		case hclsyntax.TokenOQuote:
			return hintCloseString
		case hclsyntax.TokenOHeredoc:
			return hintCloseHeredoc
		}
		return ""
	case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack:
		if !closed(toks, i) {
			if at.Type == hclsyntax.TokenOBrace {
				return hintCloseBrace
			}
			return hintCloseBracket
		}
	}

	lineStart := prevAny.Type == hclsyntax.TokenNil || prevAny.Type == hclsyntax.TokenNewline || (prevAny.Type == hclsyntax.TokenOBrace && inBody)
	switch {
	case lineStart && inBody && at.Type == hclsyntax.TokenOQuote:
		return hintBareName
	case lineStart && inBody && at.Type == hclsyntax.TokenIdent && i+1 < len(toks) && toks[i+1].Type == hclsyntax.TokenEqual:
		// A well-formed attribute that is an error: it is set again.
		return hintOnce
	case lineStart && inBody:
		return hintLine
	case at.Type == hclsyntax.TokenNewline && inBody:
		// A line that ends before its block's body opens, or while a body
		// opened on it is still open.
		if inner != nil && inner.tok.Range.Start.Line == at.Range.Start.Line {
			return hintOneLineBlock
		}
		if valueExpected(prev.Type) {
			return hintLiteral
		}
		return hintBlockHeader
	case valueExpected(prev.Type):
		if at.Type == hclsyntax.TokenNumberLit {
			return hintNumber // a number the lexer took but cannot read, as 10.1.0.1
		}
		return hintLiteral
	case valueEnd(prev.Type):
		// Something follows a complete value on its line.
		switch {
		case inner != nil && inner.tok.Type == hclsyntax.TokenOBrack:
			return hintListComma
		case inner != nil && inner.object && !inner.keyed:
			return hintKeyValue
		case inner != nil && inner.object:
			return hintObjectSeparator
		case at.Type == hclsyntax.TokenComma:
			return hintComma
		case prev.Type == hclsyntax.TokenCBrace:
			return hintBraceOwnLine
		default:
			return hintOwnLine
		}
	}
	return ""
}

// valueStart reports whether the brace at toks[i] opens a value (an object)
// rather than a block's body: a value follows =, :, a comma or an opening
// bracket.
func valueStart(toks hclsyntax.Tokens, i int) bool {
	for j := i - 1; j >= 0; j-- {
		switch toks[j].Type {
		case hclsyntax.TokenNewline:
			continue
		case hclsyntax.TokenEqual, hclsyntax.TokenColon, hclsyntax.TokenComma, hclsyntax.TokenOBrack, hclsyntax.TokenOParen:
			return true
		case hclsyntax.TokenOBrace:
			// In an object, a newline separates items: a brace after
			// another object's brace is a value too.
			return valueStart(toks, j)
		}
		return false
	}
	return false
}

// closed reports whether the bracket at toks[i] has its closing bracket.
func closed(toks hclsyntax.Tokens, i int) bool {
	depth := 0
	for _, t := range toks[i:] {
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack:
			depth++
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack:
			depth--
			if depth == 0 {
				return true
			}
		}
	}
	return false
}

// valueExpected: after this token a value must come.
func valueExpected(t hclsyntax.TokenType) bool {
	switch t {
	case hclsyntax.TokenEqual, hclsyntax.TokenColon, hclsyntax.TokenComma, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenPlus, hclsyntax.TokenMinus, hclsyntax.TokenStar, hclsyntax.TokenSlash, hclsyntax.TokenPercent,
		hclsyntax.TokenAnd, hclsyntax.TokenOr, hclsyntax.TokenBang, hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual,
		hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq, hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq, hclsyntax.TokenQuestion:
		return true
	}
	return false
}

// valueEnd: this token can end a value.
func valueEnd(t hclsyntax.TokenType) bool {
	switch t {
	case hclsyntax.TokenNumberLit, hclsyntax.TokenIdent, hclsyntax.TokenCQuote, hclsyntax.TokenCBrack, hclsyntax.TokenCBrace, hclsyntax.TokenCParen, hclsyntax.TokenCHeredoc:
		return true
	}
	return false
}
