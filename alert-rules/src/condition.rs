//! Conditions over point values, such as `NH3-101 > 28 && !FAN-101` or
//! `FT-202 - FT-201 > 5 && FURNACE-1-RUN`.
//!
//! Text is compiled once, against a resolver from tag to [`PointId`], into a flat postfix
//! program; evaluating it walks that program with a fixed-size stack, so judging a condition on
//! every reading allocates nothing.
//!
//! Language:
//! - operands: tags (`NH3-101`, `TI.2031`, or any text in double quotes or backticks), numbers
//!   (`28`, `0.5`, `1e3`), `true`, `false`;
//! - operators, loosest first: `||`; `&&`; `< <= > >= == !=` (not chained); `+ -`; `* /`;
//!   unary `!` and `-`; parentheses; functions `abs(x)`, `min(a, b)`, `max(a, b)`;
//! - a point is true when its value is not 0 (digital points: 1 = running, open, on).
//!
//! A `-` directly between letters or digits is part of a tag (`FT-202`); write subtraction with
//! spaces (`FT-202 - FT-201`).
//!
//! A point without a usable value is *unknown*, and unknowns follow Kleene logic: `false && x`
//! is false, `true || x` is true, anything else involving an unknown is unknown. The engine
//! neither raises nor clears an alarm on an unknown condition, just as it judges no limit on a
//! bad reading.

use serde::{Deserialize, Serialize};

use crate::reading::PointId;

/// How deep intermediate results may stack up. Real conditions need four or five.
pub const MAX_DEPTH: usize = 32;
const MAX_OPS: usize = 512;

/// A compiled condition. The `Display` form is the source text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    source: String,
    ops: Vec<Op>,
    /// Every point the condition reads, sorted, without duplicates.
    points: Vec<PointId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Const(f64),
    Point(PointId),
    Neg,
    Not,
    Abs,
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

/// The outcome of a condition under three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    True,
    False,
    /// Some point it depends on has no usable value, and the rest does not decide it.
    Unknown,
}

/// A condition that does not compile: where (0-based character position in the text) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {}: {message}", .position + 1)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl Condition {
    /// Compile `text`, asking `resolve` for the point of each tag. An unknown tag is an error at
    /// the tag's position, so `sentinel check` can point at it.
    pub fn compile(
        text: &str,
        resolve: impl FnMut(&str) -> Option<PointId>,
    ) -> Result<Condition, ParseError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
            ops: Vec::new(),
            depth: 0,
            resolve,
        };
        parser.expr(0)?;
        if let Some(t) = parser.peek_token() {
            return Err(ParseError {
                position: t.pos,
                message: format!("unexpected {}", t.kind.describe()),
            });
        }
        let ops = parser.ops;
        let mut points: Vec<PointId> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Point(p) => Some(*p),
                _ => None,
            })
            .collect();
        points.sort_unstable();
        points.dedup();
        Ok(Condition {
            source: text.trim().to_owned(),
            ops,
            points,
        })
    }

    /// The points the condition reads, sorted, without duplicates.
    pub fn points(&self) -> &[PointId] {
        &self.points
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate with `value` giving each point's current value; NaN means "no usable value".
    /// Allocates nothing.
    pub fn evaluate(&self, value: impl Fn(PointId) -> f64) -> Truth {
        let mut stack = [0.0f64; MAX_DEPTH];
        let mut sp = 0usize;
        for op in &self.ops {
            match *op {
                // Only a hand-edited serialised program can overflow; compiled ones are checked.
                Op::Const(_) | Op::Point(_) if sp >= MAX_DEPTH => return Truth::Unknown,
                Op::Const(c) => {
                    stack[sp] = c;
                    sp += 1;
                }
                Op::Point(p) => {
                    stack[sp] = value(p);
                    sp += 1;
                }
                Op::Neg | Op::Not | Op::Abs => {
                    let Some(top) = sp.checked_sub(1) else {
                        return Truth::Unknown;
                    };
                    let x = stack[top];
                    stack[top] = match *op {
                        Op::Neg => -x,
                        Op::Abs => x.abs(),
                        _ => not(x),
                    };
                }
                _ => {
                    if sp < 2 {
                        return Truth::Unknown;
                    }
                    sp -= 1;
                    let (a, b) = (stack[sp - 1], stack[sp]);
                    stack[sp - 1] = binary(*op, a, b);
                }
            }
        }
        if sp != 1 {
            return Truth::Unknown;
        }
        let r = stack[0];
        if r.is_nan() {
            Truth::Unknown
        } else if r != 0.0 {
            Truth::True
        } else {
            Truth::False
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

fn truth(x: f64) -> Option<bool> {
    if x.is_nan() { None } else { Some(x != 0.0) }
}

fn from_bool(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn not(x: f64) -> f64 {
    truth(x).map_or(f64::NAN, |t| from_bool(!t))
}

fn binary(op: Op, a: f64, b: f64) -> f64 {
    let either_nan = a.is_nan() || b.is_nan();
    let cmp = |r: bool| if either_nan { f64::NAN } else { from_bool(r) };
    match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div => a / b,
        // f64::min ignores NaN; an unknown operand must make the result unknown.
        Op::Min => {
            if either_nan {
                f64::NAN
            } else {
                a.min(b)
            }
        }
        Op::Max => {
            if either_nan {
                f64::NAN
            } else {
                a.max(b)
            }
        }
        Op::Lt => cmp(a < b),
        Op::Le => cmp(a <= b),
        Op::Gt => cmp(a > b),
        Op::Ge => cmp(a >= b),
        Op::Eq => cmp(a == b),
        Op::Ne => cmp(a != b),
        Op::And => match (truth(a), truth(b)) {
            (Some(false), _) | (_, Some(false)) => 0.0,
            (Some(true), Some(true)) => 1.0,
            _ => f64::NAN,
        },
        Op::Or => match (truth(a), truth(b)) {
            (Some(true), _) | (_, Some(true)) => 1.0,
            (Some(false), Some(false)) => 0.0,
            _ => f64::NAN,
        },
        Op::Const(_) | Op::Point(_) | Op::Neg | Op::Not | Op::Abs => f64::NAN,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Number(f64),
    Tag(String),
    /// A bare word directly followed by `(`.
    Function(String),
    Sym(&'static str),
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Number(n) => format!("number {n}"),
            TokenKind::Tag(t) => format!("tag `{t}`"),
            TokenKind::Function(f) => format!("function `{f}`"),
            TokenKind::Sym(s) => format!("`{s}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    /// Character position in the source.
    pos: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: String| Err(ParseError { position, message });
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                let mut j = i + 1;
                if j < chars.len() && matches!(chars[j], '+' | '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if i < chars.len() && is_tag_char(chars[i]) {
                return err(
                    start,
                    "a tag must start with a letter or `_`; put other tags in double quotes".into(),
                );
            }
            let s: String = chars[start..i].iter().collect();
            match s.parse::<f64>() {
                Ok(n) => tokens.push(Token {
                    kind: TokenKind::Number(n),
                    pos: start,
                }),
                Err(_) => return err(start, format!("`{s}` is not a number")),
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && is_tag_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let kind = if chars.get(j) == Some(&'(') {
                TokenKind::Function(word)
            } else {
                TokenKind::Tag(word)
            };
            tokens.push(Token { kind, pos: start });
            continue;
        }
        if c == '"' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return err(start, format!("unclosed {c}"));
            }
            let tag: String = chars[start + 1..i].iter().collect();
            if tag.is_empty() {
                return err(start, "empty tag".into());
            }
            i += 1;
            tokens.push(Token {
                kind: TokenKind::Tag(tag),
                pos: start,
            });
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (sym, len): (&'static str, usize) = match (c, next) {
            ('&', Some('&')) => ("&&", 2),
            ('|', Some('|')) => ("||", 2),
            ('<', Some('=')) => ("<=", 2),
            ('>', Some('=')) => (">=", 2),
            ('=', Some('=')) => ("==", 2),
            ('!', Some('=')) => ("!=", 2),
            ('&', _) => return err(start, "expected `&&`".into()),
            ('|', _) => return err(start, "expected `||`".into()),
            ('=', _) => return err(start, "expected `==` (comparison), not `=`".into()),
            ('<', _) => ("<", 1),
            ('>', _) => (">", 1),
            ('!', _) => ("!", 1),
            ('+', _) => ("+", 1),
            ('-', _) => ("-", 1),
            ('*', _) => ("*", 1),
            ('/', _) => ("/", 1),
            ('(', _) => ("(", 1),
            (')', _) => (")", 1),
            (',', _) => (",", 1),
            _ => return err(start, format!("unexpected character `{c}`")),
        };
        tokens.push(Token {
            kind: TokenKind::Sym(sym),
            pos: start,
        });
        i += len;
    }
    Ok(tokens)
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Binding powers (left, right) of the infix operators, and the postfix op each emits.
fn infix(sym: &str) -> Option<(u8, u8, Op)> {
    Some(match sym {
        "||" => (1, 2, Op::Or),
        "&&" => (3, 4, Op::And),
        "<" => (5, 6, Op::Lt),
        "<=" => (5, 6, Op::Le),
        ">" => (5, 6, Op::Gt),
        ">=" => (5, 6, Op::Ge),
        "==" => (5, 6, Op::Eq),
        "!=" => (5, 6, Op::Ne),
        "+" => (7, 8, Op::Add),
        "-" => (7, 8, Op::Sub),
        "*" => (9, 10, Op::Mul),
        "/" => (9, 10, Op::Div),
        _ => return None,
    })
}

const COMPARISON_BP: u8 = 5;
const UNARY_BP: u8 = 11;

struct Parser<'t, R> {
    tokens: &'t [Token],
    at: usize,
    ops: Vec<Op>,
    /// Current and (checked against MAX_DEPTH) stack depth of the program emitted so far.
    depth: usize,
    resolve: R,
}

impl<R: FnMut(&str) -> Option<PointId>> Parser<'_, R> {
    fn peek_token(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn end_pos(&self) -> usize {
        self.tokens.last().map_or(0, |t| t.pos + 1)
    }

    fn emit(&mut self, op: Op, pos: usize) -> Result<(), ParseError> {
        match op {
            Op::Const(_) | Op::Point(_) => self.depth += 1,
            Op::Neg | Op::Not | Op::Abs => {}
            _ => self.depth -= 1,
        }
        if self.depth > MAX_DEPTH || self.ops.len() >= MAX_OPS {
            return Err(ParseError {
                position: pos,
                message: "expression is too deeply nested or too long".into(),
            });
        }
        self.ops.push(op);
        Ok(())
    }

    fn expect(&mut self, sym: &str) -> Result<(), ParseError> {
        match self.peek_token() {
            Some(Token {
                kind: TokenKind::Sym(s),
                ..
            }) if *s == sym => {
                self.at += 1;
                Ok(())
            }
            Some(t) => Err(ParseError {
                position: t.pos,
                message: format!("expected `{sym}`, found {}", t.kind.describe()),
            }),
            None => Err(ParseError {
                position: self.end_pos(),
                message: format!("expected `{sym}` at the end"),
            }),
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<(), ParseError> {
        self.operand()?;
        let mut compared = false;
        while let Some(Token {
            kind: TokenKind::Sym(sym),
            pos,
        }) = self.peek_token().cloned()
        {
            let Some((lbp, rbp, op)) = infix(sym) else {
                break;
            };
            if lbp < min_bp {
                break;
            }
            if lbp == COMPARISON_BP {
                if compared {
                    return Err(ParseError {
                        position: pos,
                        message: "comparisons cannot be chained; join them with `&&`".into(),
                    });
                }
                compared = true;
            }
            self.at += 1;
            self.expr(rbp)?;
            self.emit(op, pos)?;
        }
        Ok(())
    }

    fn operand(&mut self) -> Result<(), ParseError> {
        let Some(token) = self.peek_token().cloned() else {
            return Err(ParseError {
                position: self.end_pos(),
                message: "expected a value at the end".into(),
            });
        };
        self.at += 1;
        let pos = token.pos;
        match token.kind {
            TokenKind::Number(n) => self.emit(Op::Const(n), pos),
            TokenKind::Tag(tag) if tag == "true" => self.emit(Op::Const(1.0), pos),
            TokenKind::Tag(tag) if tag == "false" => self.emit(Op::Const(0.0), pos),
            TokenKind::Tag(tag) => match (self.resolve)(&tag) {
                Some(p) => self.emit(Op::Point(p), pos),
                None => {
                    let hint = if tag.contains('-') {
                        " (write subtraction with spaces: `A - B`)"
                    } else {
                        ""
                    };
                    Err(ParseError {
                        position: pos,
                        message: format!("unknown tag `{tag}`{hint}"),
                    })
                }
            },
            TokenKind::Function(name) => {
                let (arity, op) = match name.as_str() {
                    "abs" => (1, Op::Abs),
                    "min" => (2, Op::Min),
                    "max" => (2, Op::Max),
                    _ => {
                        return Err(ParseError {
                            position: pos,
                            message: format!("unknown function `{name}` (known: abs, min, max)"),
                        });
                    }
                };
                self.expect("(")?;
                self.expr(0)?;
                if arity == 2 {
                    self.expect(",")?;
                    self.expr(0)?;
                }
                self.expect(")")?;
                self.emit(op, pos)
            }
            TokenKind::Sym("(") => {
                self.expr(0)?;
                self.expect(")")
            }
            TokenKind::Sym("!") => {
                self.expr(UNARY_BP)?;
                self.emit(Op::Not, pos)
            }
            TokenKind::Sym("-") => {
                self.expr(UNARY_BP)?;
                self.emit(Op::Neg, pos)
            }
            other => Err(ParseError {
                position: pos,
                message: format!("expected a value, found {}", other.describe()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: [&str; 6] = [
        "NH3-101",
        "FAN-101",
        "FT-201",
        "FT-202",
        "FURNACE-1-RUN",
        "TI.2031",
    ];

    fn resolve(tag: &str) -> Option<PointId> {
        TAGS.iter()
            .position(|t| *t == tag)
            .map(|i| PointId(i as u32))
    }

    fn compile(text: &str) -> Condition {
        Condition::compile(text, resolve).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn eval(text: &str, values: [f64; 6]) -> Truth {
        compile(text).evaluate(|p| values[p.0 as usize])
    }

    #[test]
    fn ammonia_with_fan_stopped() {
        let c = compile("NH3-101 > 28 && !FAN-101");
        assert_eq!(c.points(), &[PointId(0), PointId(1)]);
        assert_eq!(c.evaluate(|p| [30.0, 0.0][p.0 as usize]), Truth::True);
        assert_eq!(c.evaluate(|p| [30.0, 1.0][p.0 as usize]), Truth::False);
        assert_eq!(c.evaluate(|p| [20.0, 0.0][p.0 as usize]), Truth::False);
    }

    #[test]
    fn flow_difference_while_running() {
        let t = "FT-202 - FT-201 > 5 && FURNACE-1-RUN";
        assert_eq!(eval(t, [0.0, 0.0, 100.0, 106.0, 1.0, 0.0]), Truth::True);
        assert_eq!(eval(t, [0.0, 0.0, 100.0, 104.0, 1.0, 0.0]), Truth::False);
        assert_eq!(eval(t, [0.0, 0.0, 100.0, 106.0, 0.0, 0.0]), Truth::False);
    }

    #[test]
    fn precedence_and_functions() {
        let v = [2.0, 3.0, 4.0, 10.0, 1.0, -7.0];
        assert_eq!(eval("NH3-101 + FAN-101 * FT-201 == 14", v), Truth::True);
        assert_eq!(eval("(NH3-101 + FAN-101) * FT-201 == 20", v), Truth::True);
        assert_eq!(
            eval("abs(TI.2031) >= 7 && max(FT-201, FT-202) == 10", v),
            Truth::True
        );
        assert_eq!(eval("min(FT-201, FT-202) / 2 < 2.5", v), Truth::True);
        assert_eq!(eval("-TI.2031 == 7", v), Truth::True);
        assert_eq!(eval("false || !(NH3-101 > 1e3)", v), Truth::True);
        assert_eq!(eval("NH3-101 > 1 || FAN-101 > 1 && false", v), Truth::True);
    }

    #[test]
    fn unknowns_follow_kleene_logic() {
        let nan = f64::NAN;
        let v = [nan, 0.0, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(eval("NH3-101 > 28", v), Truth::Unknown);
        assert_eq!(eval("NH3-101 > 28 && FAN-101", v), Truth::False);
        assert_eq!(eval("NH3-101 > 28 || FURNACE-1-RUN", v), Truth::True);
        assert_eq!(eval("NH3-101 > 28 && FURNACE-1-RUN", v), Truth::Unknown);
        assert_eq!(eval("!NH3-101", v), Truth::Unknown);
        assert_eq!(eval("max(NH3-101, 5) > 1", v), Truth::Unknown);
    }

    #[test]
    fn quoted_tags_and_non_ascii_tags() {
        let c = Condition::compile("\"101-TI\" > 5 && `x y` < 2 && 氨-1 > 0", |t| match t {
            "101-TI" => Some(PointId(0)),
            "x y" => Some(PointId(1)),
            "氨-1" => Some(PointId(2)),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.evaluate(|p| [6.0, 1.0, 1.0][p.0 as usize]), Truth::True);
    }

    #[test]
    fn errors_carry_position_and_message() {
        let cases: [(&str, usize, &str); 11] = [
            ("NH3-101 > 28 && !FAN-102", 17, "unknown tag `FAN-102`"),
            ("FT-202-FT-201 > 5", 0, "write subtraction with spaces"),
            ("NH3-101 > ", 9, "expected a value at the end"),
            ("NH3-101 & FAN-101", 8, "expected `&&`"),
            ("NH3-101 = 3", 8, "expected `==`"),
            ("(NH3-101 > 3", 12, "expected `)`"),
            ("1 < NH3-101 < 3", 12, "cannot be chained"),
            ("NH3-101 > 3 FAN-101", 12, "unexpected tag `FAN-101`"),
            ("sqrt(NH3-101)", 0, "unknown function `sqrt`"),
            ("NH3-101 > 2x", 10, "must start with a letter"),
            ("NH3-101 # 2", 8, "unexpected character `#`"),
        ];
        for (text, position, message) in cases {
            let e = Condition::compile(text, resolve).expect_err(text);
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        let e = Condition::compile("x > ", |_| Some(PointId(0))).unwrap_err();
        assert_eq!(e.to_string(), "column 4: expected a value at the end");
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}1{}", "(1 + ".repeat(40), ")".repeat(40));
        let e = Condition::compile(&deep, resolve).unwrap_err();
        assert!(e.message.contains("too deeply nested"), "{e}");
        let fine = format!("{}1{}", "(1 + ".repeat(20), ")".repeat(20));
        assert_eq!(
            Condition::compile(&format!("{fine} > 0"), resolve)
                .unwrap()
                .evaluate(|_| 0.0),
            Truth::True
        );
    }

    #[test]
    fn serde_round_trip_keeps_the_program() {
        let c = compile("FT-202 - FT-201 > 5 && FURNACE-1-RUN");
        let back: Condition = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.to_string(), "FT-202 - FT-201 > 5 && FURNACE-1-RUN");
    }
}
