//! EnterpriseData («универсальный формат обмена») exchange messages, read
//! and written.
//!
//! A message is `<Message>` (no namespace) with `msg:Header` in
//! `http://www.1c.ru/SSL/Exchange/Message` and a `Body` whose default
//! namespace is `http://v8.1c.ru/edi/edi_stnd/EnterpriseData/<version>`;
//! the body holds objects such as `Справочник.Контрагенты` or
//! `Документ.ЗаказКлиента`, each keyed by `КлючевыеСвойства/Ссылка`.
//!
//! [`MessageReader`] pulls one body object at a time from any `BufRead`,
//! so a large message never has to be held whole; objects are element
//! trees ([`Element`]) whatever their type, since the format has hundreds
//! of them and a mapping picks the fields it needs ([`Element::to_record`]
//! gives the JSON a binding reads). [`write_message`] writes the canonical
//! layout (UTF-8, two-space indentation, `msg:` prefix), so what it wrote
//! reads back and writes again byte for byte.

use std::io::{BufRead, Write};

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value};

/// Namespace of the message envelope (`msg:`).
pub const MESSAGE_NS: &str = "http://www.1c.ru/SSL/Exchange/Message";
/// Namespace prefix of the body's format, followed by the version.
pub const FORMAT_NS_PREFIX: &str = "http://v8.1c.ru/edi/edi_stnd/EnterpriseData/";

/// Why a message cannot be read; says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct EnterpriseDataError {
    /// The element path and the byte offset (or line and column when the
    /// whole input is known), e.g. `Message/Body/Документ.ЗаказКлиента/Товары (line 14, column 9)`.
    pub place: String,
    pub message: String,
}

/// One XML element: a leaf with text, or a node with children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The local name, e.g. `Документ.ЗаказКлиента`.
    pub name: String,
    /// Attributes as written (qualified names), e.g. `xsi:type`.
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn leaf(name: &str, text: &str) -> Self {
        Self { name: name.to_owned(), attributes: Vec::new(), text: text.to_owned(), children: Vec::new() }
    }

    pub fn node(name: &str, children: Vec<Element>) -> Self {
        Self { name: name.to_owned(), attributes: Vec::new(), text: String::new(), children }
    }

    /// The first child of that name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text at a `/`-separated path of children, e.g. `КлючевыеСвойства/Ссылка`.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        path.split('/').try_fold(self, |e, name| e.child(name)).map(|e| e.text.as_str())
    }

    /// The object's reference (`КлючевыеСвойства/Ссылка`).
    pub fn ref_key(&self) -> Option<&str> {
        self.text_at("КлючевыеСвойства/Ссылка")
    }

    /// The element as JSON for mappings: a leaf is its text, a node an
    /// object of its children; repeated children (`Строка` rows of a
    /// tabular section) become an array. Texts stay texts: amounts and
    /// dates keep their exact digits for the mapping's conversions.
    pub fn to_record(&self) -> Value {
        if self.children.is_empty() {
            return Value::String(self.text.clone());
        }
        if self.children.len() > 1 && self.children.iter().all(|c| c.name == self.children[0].name) {
            return Value::Array(self.children.iter().map(Element::to_record).collect());
        }
        let mut map = Map::new();
        for child in &self.children {
            match map.get_mut(&child.name) {
                Some(Value::Array(items)) if self.children.iter().filter(|c| c.name == child.name).count() > 1 => {
                    items.push(child.to_record())
                }
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, child.to_record()]);
                }
                None => {
                    map.insert(child.name.clone(), child.to_record());
                }
            }
        }
        Value::Object(map)
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The children of `msg:Header` (`Format`, `CreationDate`,
    /// `Confirmation`, `AvailableVersion`, …) by local name.
    pub header: Vec<Element>,
    /// The body's namespace: the format with its version.
    pub format: String,
    pub objects: Vec<Element>,
}

impl Message {
    /// The format version, e.g. `1.8`.
    pub fn version(&self) -> &str {
        self.format.strip_prefix(FORMAT_NS_PREFIX).unwrap_or_default()
    }
}

/// Reads a whole message held in memory; errors carry line and column.
pub fn read_message(bytes: &[u8]) -> Result<Message, EnterpriseDataError> {
    let with_lines = |e: EnterpriseDataError, offset: u64| {
        let (line, column) = line_column(bytes, offset as usize);
        EnterpriseDataError { place: format!("{} (line {line}, column {column})", e.place), message: e.message }
    };
    let mut reader = MessageReader::new(bytes).map_err(|(e, at)| with_lines(e, at))?;
    let mut objects = Vec::new();
    loop {
        match reader.next_object() {
            Ok(Some(object)) => objects.push(object),
            Ok(None) => break,
            Err(e) => {
                let at = reader.position();
                return Err(with_lines(e, at));
            }
        }
    }
    Ok(Message { header: reader.header, format: reader.format, objects })
}

fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

/// Pulls body objects one at a time.
pub struct MessageReader<R: BufRead> {
    reader: NsReader<R>,
    buf: Vec<u8>,
    /// Element names from the root to where the reader is.
    path: Vec<String>,
    pub header: Vec<Element>,
    pub format: String,
    done: bool,
}

/// One event, owned, with its resolved namespace.
enum Step {
    Start { name: String, ns: Option<String>, attributes: Vec<(String, String)>, empty: bool },
    End,
    Text(String),
    Eof,
}

impl<R: BufRead> MessageReader<R> {
    /// Reads up to the first body object: the header must be there and the
    /// body's namespace an EnterpriseData format.
    pub fn new(input: R) -> Result<Self, (EnterpriseDataError, u64)> {
        let mut this = Self {
            reader: NsReader::from_reader(input),
            buf: Vec::new(),
            path: Vec::new(),
            header: Vec::new(),
            format: String::new(),
            done: false,
        };
        this.open().map_err(|e| (e, this.position()))?;
        Ok(this)
    }

    pub fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn fail(&self, message: impl Into<String>) -> EnterpriseDataError {
        let place = if self.path.is_empty() { "document".to_owned() } else { self.path.join("/") };
        EnterpriseDataError { place: format!("{place} (byte {})", self.position()), message: message.into() }
    }

    fn step(&mut self) -> Result<Step, EnterpriseDataError> {
        loop {
            self.buf.clear();
            let (ns, event) = match self.reader.read_resolved_event_into(&mut self.buf) {
                Ok(pair) => pair,
                Err(e) => {
                    let message = format!("malformed XML: {e}");
                    return Err(self.fail(message));
                }
            };
            let ns = match ns {
                ResolveResult::Bound(n) => Some(AsRef::<str>::as_ref(&n).to_owned()),
                _ => None,
            };
            return Ok(match event {
                Event::Start(e) => Step::Start { name: local(&e), ns, attributes: attributes(&e), empty: false },
                Event::Empty(e) => Step::Start { name: local(&e), ns, attributes: attributes(&e), empty: true },
                Event::End(_) => Step::End,
                Event::Text(t) => Step::Text(t.xml10_content().into_owned()),
                Event::CData(t) => Step::Text(t.into_inner().into_owned()),
                Event::GeneralRef(r) => {
                    let name = r.xml10_content().into_owned();
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        _ => match name.as_str() {
                            "amp" => Some('&'),
                            "lt" => Some('<'),
                            "gt" => Some('>'),
                            "quot" => Some('"'),
                            "apos" => Some('\''),
                            _ => None,
                        },
                    };
                    let c = c.ok_or_else(|| self.fail(format!("unknown entity `&{name};`")))?;
                    Step::Text(c.to_string())
                }
                Event::DocType(_) => return Err(self.fail("a DOCTYPE is not allowed in an exchange message")),
                Event::Eof => Step::Eof,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
            });
        }
    }

    /// The next start tag, skipping whitespace; anything else is `what`'s absence.
    fn expect_start(&mut self, what: &str) -> Result<(String, Option<String>, bool), EnterpriseDataError> {
        loop {
            match self.step()? {
                Step::Start { name, ns, empty, .. } => return Ok((name, ns, empty)),
                Step::Text(t) if t.trim().is_empty() => continue,
                Step::Text(t) => return Err(self.fail(format!("text `{}` where {what} was expected", short(&t)))),
                Step::End => return Err(self.fail(format!("{what} is missing"))),
                Step::Eof => return Err(self.fail(format!("the message ends before {what}"))),
            }
        }
    }

    fn open(&mut self) -> Result<(), EnterpriseDataError> {
        let (name, ns, _) = self.expect_start("`<Message>`")?;
        if name != "Message" || ns.is_some() {
            return Err(self.fail(format!("the root is `{name}`, not an exchange `<Message>` (no namespace)")));
        }
        self.path.push(name);
        let (name, ns, empty) = self.expect_start("`<msg:Header>`")?;
        if name != "Header" || ns.as_deref() != Some(MESSAGE_NS) {
            return Err(self.fail(format!("`{name}` where `<msg:Header>` ({MESSAGE_NS}) was expected")));
        }
        if !empty {
            self.path.push(name);
            self.header = self.children()?;
            self.path.pop();
        }
        let (name, ns, empty) = self.expect_start("`<Body>`")?;
        let format = ns.unwrap_or_default();
        if name != "Body" || !format.starts_with(FORMAT_NS_PREFIX) {
            return Err(self.fail(format!(
                "`{name}` in namespace `{format}` where `<Body xmlns=\"{FORMAT_NS_PREFIX}<version>\">` was expected"
            )));
        }
        self.format = format;
        self.path.push(name);
        self.done = empty;
        if empty {
            self.path.pop();
            self.close_message()?;
        }
        Ok(())
    }

    /// Reads the children of the element just opened, up to its end tag.
    fn children(&mut self) -> Result<Vec<Element>, EnterpriseDataError> {
        let mut children = Vec::new();
        loop {
            match self.step()? {
                Step::Start { name, attributes, empty, .. } => children.push(self.element(name, attributes, empty)?),
                Step::Text(t) if t.trim().is_empty() => {}
                Step::Text(t) => return Err(self.fail(format!("text `{}` between elements", short(&t)))),
                Step::End => return Ok(children),
                Step::Eof => return Err(self.fail("the message ends inside this element")),
            }
        }
    }

    /// Reads one element whose start tag was just read.
    fn element(
        &mut self,
        name: String,
        attributes: Vec<(String, String)>,
        empty: bool,
    ) -> Result<Element, EnterpriseDataError> {
        let mut element = Element { name, attributes, text: String::new(), children: Vec::new() };
        if empty {
            return Ok(element);
        }
        self.path.push(element.name.clone());
        loop {
            match self.step()? {
                Step::Start { name, attributes, empty, .. } => {
                    if !element.text.trim().is_empty() {
                        return Err(self.fail("text and elements mixed"));
                    }
                    element.text.clear();
                    element.children.push(self.element(name, attributes, empty)?);
                }
                Step::Text(t) => {
                    if !element.children.is_empty() && !t.trim().is_empty() {
                        return Err(self.fail("text and elements mixed"));
                    }
                    if element.children.is_empty() {
                        element.text.push_str(&t);
                    }
                }
                Step::End => break,
                Step::Eof => return Err(self.fail("the message ends inside this element")),
            }
        }
        self.path.pop();
        Ok(element)
    }

    fn close_message(&mut self) -> Result<(), EnterpriseDataError> {
        loop {
            match self.step()? {
                Step::Text(t) if t.trim().is_empty() => {}
                Step::End => break,
                Step::Start { name, .. } => return Err(self.fail(format!("`{name}` after the body"))),
                Step::Text(t) => return Err(self.fail(format!("text `{}` after the body", short(&t)))),
                Step::Eof => return Err(self.fail("`</Message>` is missing")),
            }
        }
        self.path.pop();
        loop {
            match self.step()? {
                Step::Eof => return Ok(()),
                Step::Text(t) if t.trim().is_empty() => {}
                _ => return Err(self.fail("content after `</Message>`")),
            }
        }
    }

    /// The next body object; `None` after the last.
    pub fn next_object(&mut self) -> Result<Option<Element>, EnterpriseDataError> {
        if self.done {
            return Ok(None);
        }
        loop {
            match self.step()? {
                Step::Start { name, attributes, empty, .. } => return self.element(name, attributes, empty).map(Some),
                Step::Text(t) if t.trim().is_empty() => {}
                Step::Text(t) => return Err(self.fail(format!("text `{}` between objects", short(&t)))),
                Step::End => {
                    self.done = true;
                    self.path.pop();
                    self.close_message()?;
                    return Ok(None);
                }
                Step::Eof => return Err(self.fail("the message ends inside the body")),
            }
        }
    }
}

fn local(e: &BytesStart<'_>) -> String {
    AsRef::<str>::as_ref(&e.local_name()).to_owned()
}

/// Attributes other than namespace declarations.
fn attributes(e: &BytesStart<'_>) -> Vec<(String, String)> {
    e.attributes()
        .flatten()
        .filter(|a| {
            let key = AsRef::<str>::as_ref(&a.key).to_owned();
            key != "xmlns" && !key.starts_with("xmlns:")
        })
        .map(|a| {
            let key = AsRef::<str>::as_ref(&a.key).to_owned();
            let value =
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map(|v| v.into_owned()).unwrap_or_default();
            (key, value)
        })
        .collect()
}

fn short(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(30).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    s
}

/// Writes `message` in the canonical layout.
pub fn write_message(message: &Message, out: &mut impl Write) -> std::io::Result<()> {
    let mut text = String::new();
    text.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    text.push_str(&format!(
        "<Message xmlns:msg=\"{MESSAGE_NS}\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n"
    ));
    text.push_str("  <msg:Header>\n");
    for element in &message.header {
        write_element(&mut text, element, 2, "msg:");
    }
    text.push_str("  </msg:Header>\n");
    if message.objects.is_empty() {
        text.push_str(&format!("  <Body xmlns=\"{}\"/>\n", escape(&message.format)));
    } else {
        text.push_str(&format!("  <Body xmlns=\"{}\">\n", escape(&message.format)));
        for object in &message.objects {
            write_element(&mut text, object, 2, "");
        }
        text.push_str("  </Body>\n");
    }
    text.push_str("</Message>\n");
    out.write_all(text.as_bytes())
}

fn write_element(out: &mut String, element: &Element, depth: usize, prefix: &str) {
    let indent = "  ".repeat(depth);
    out.push_str(&indent);
    out.push('<');
    out.push_str(prefix);
    out.push_str(&element.name);
    for (k, v) in &element.attributes {
        out.push_str(&format!(" {k}=\"{}\"", escape(v)));
    }
    if element.children.is_empty() {
        if element.text.is_empty() {
            out.push_str("/>\n");
        } else {
            out.push_str(&format!(">{}</{prefix}{}>\n", escape(&element.text), element.name));
        }
        return;
    }
    out.push_str(">\n");
    for child in &element.children {
        write_element(out, child, depth + 1, prefix);
    }
    out.push_str(&format!("{indent}</{prefix}{}>\n", element.name));
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's tiny example in the canonical layout.
    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Message xmlns:msg="http://www.1c.ru/SSL/Exchange/Message" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <msg:Header>
    <msg:Format>http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8</msg:Format>
    <msg:CreationDate>2015-09-28T14:55:15</msg:CreationDate>
    <msg:Confirmation>
      <msg:ExchangePlan>СинхронизацияДанныхЧерезУниверсальныйФормат</msg:ExchangePlan>
      <msg:To>БП</msg:To>
      <msg:From>QQ</msg:From>
      <msg:MessageNo>4</msg:MessageNo>
      <msg:ReceivedNo>5</msg:ReceivedNo>
    </msg:Confirmation>
    <msg:AvailableVersion>1.8</msg:AvailableVersion>
  </msg:Header>
  <Body xmlns="http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8">
    <Справочник.Контрагенты>
      <КлючевыеСвойства>
        <Ссылка>553d56f1-8295-11f1-8af8-04ecd881cf53</Ссылка>
        <Наименование>ООО Ромашка</Наименование>
        <НаименованиеПолное>Общество с ограниченной ответственностью &quot;Ромашка&quot; &amp; Ко</НаименованиеПолное>
        <ИНН>7707083893</ИНН>
        <КПП>773601001</КПП>
        <ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо>
      </КлючевыеСвойства>
    </Справочник.Контрагенты>
    <Документ.ЗаказКлиента>
      <КлючевыеСвойства>
        <Ссылка>8b9660f6-6332-11ec-ad72-000c29b45b09</Ссылка>
        <Номер>ТД-000042</Номер>
        <Дата>2024-03-20T00:00:00</Дата>
        <Проведен>true</Проведен>
      </КлючевыеСвойства>
      <Контрагент>
        <Ссылка>553d56f1-8295-11f1-8af8-04ecd881cf53</Ссылка>
        <Наименование>ООО Ромашка</Наименование>
      </Контрагент>
      <Сумма>1234567.89</Сумма>
      <Комментарий/>
      <Товары>
        <Строка>
          <НомерСтрокиДокумента>1</НомерСтрокиДокумента>
          <Количество>1.000</Количество>
          <Цена>1200</Цена>
          <Сумма>1200</Сумма>
          <СтавкаНДС>НДС20</СтавкаНДС>
        </Строка>
        <Строка>
          <НомерСтрокиДокумента>2</НомерСтрокиДокумента>
          <Количество>3</Количество>
          <Цена>411122.563</Цена>
          <Сумма>1233367.89</Сумма>
          <СтавкаНДС>БезНДС</СтавкаНДС>
        </Строка>
      </Товары>
    </Документ.ЗаказКлиента>
  </Body>
</Message>
"#;

    fn written(message: &Message) -> String {
        let mut out = Vec::new();
        write_message(message, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_message_reads_and_writes_back_byte_for_byte() {
        let message = read_message(SAMPLE.as_bytes()).unwrap();
        assert_eq!(message.version(), "1.8");
        assert_eq!(message.objects.len(), 2);
        assert_eq!(written(&message), SAMPLE);
        let again = read_message(written(&message).as_bytes()).unwrap();
        assert_eq!(again, message);
    }

    #[test]
    fn guids_cyrillic_dates_and_amounts_come_out_exactly() {
        let message = read_message(SAMPLE.as_bytes()).unwrap();
        let client = &message.objects[0];
        assert_eq!(client.name, "Справочник.Контрагенты");
        assert_eq!(client.ref_key(), Some("553d56f1-8295-11f1-8af8-04ecd881cf53"));
        assert_eq!(
            client.text_at("КлючевыеСвойства/НаименованиеПолное"),
            Some("Общество с ограниченной ответственностью \"Ромашка\" & Ко")
        );
        let order = message.objects[1].to_record();
        assert_eq!(order["КлючевыеСвойства"]["Дата"], "2024-03-20T00:00:00");
        assert_eq!(order["Сумма"], "1234567.89");
        assert_eq!(order["Комментарий"], "");
        assert_eq!(order["Товары"][1]["Цена"], "411122.563");
        assert_eq!(order["Товары"][0]["Количество"], "1.000", "digits as written");
    }

    #[test]
    fn objects_are_pulled_one_at_a_time() {
        let mut reader = MessageReader::new(SAMPLE.as_bytes()).map_err(|(e, _)| e).unwrap();
        assert_eq!(reader.header[0].text, "http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8");
        assert_eq!(reader.next_object().unwrap().unwrap().name, "Справочник.Контрагенты");
        assert_eq!(reader.next_object().unwrap().unwrap().name, "Документ.ЗаказКлиента");
        assert_eq!(reader.next_object().unwrap(), None);
        assert_eq!(reader.next_object().unwrap(), None);
    }

    #[test]
    fn a_bom_and_an_empty_body_are_fine() {
        let empty = SAMPLE.split("  <Body").next().unwrap().to_owned()
            + "  <Body xmlns=\"http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.20\"/>\n</Message>\n";
        let message = read_message(format!("\u{feff}{empty}").as_bytes()).unwrap();
        assert!(message.objects.is_empty());
        assert_eq!(message.version(), "1.20");
        assert_eq!(written(&message), empty);
    }

    #[test]
    fn malformed_messages_name_the_place() {
        let err = |text: &str| read_message(text.as_bytes()).unwrap_err().to_string();
        let broken = SAMPLE.replace("<Цена>1200</Цена>", "<Цена>1200</Цен>");
        let e = err(&broken);
        assert!(e.contains("Message/Body/Документ.ЗаказКлиента/Товары/Строка/Цена"), "{e}");
        assert!(e.contains("line 43, column 27"), "{e}");
        let e = err(&SAMPLE.replace("EnterpriseData/1.8\">", "urn:other\">"));
        assert!(e.contains("namespace `http://v8.1c.ru/edi/edi_stnd/urn:other`") && e.starts_with("Message "), "{e}");
        let e = err("<Root/>");
        assert!(e.contains("not an exchange `<Message>`"), "{e}");
        let e = err(&SAMPLE.replace("<msg:Header>", "<Header>").replace("</msg:Header>", "</Header>"));
        assert!(e.contains("`<msg:Header>`"), "{e}");
        let e = err(&SAMPLE[..SAMPLE.len() / 2]);
        assert!(e.contains("end of input") && e.contains("Справочник.Контрагенты"), "{e}");
        let cut = SAMPLE.find("    <Документ.ЗаказКлиента>").unwrap();
        let e = err(&SAMPLE[..cut]);
        assert!(e.contains("ends inside the body"), "{e}");
        let e = err(&SAMPLE.replace("<Сумма>1234567.89</Сумма>", "<Сумма>1&nbsp;234</Сумма>"));
        assert!(e.contains("`&nbsp;`") && e.contains("Документ.ЗаказКлиента/Сумма"), "{e}");
        let e = err(&SAMPLE.replace("<Комментарий/>", "<Комментарий>x<Y/></Комментарий>"));
        assert!(e.contains("mixed"), "{e}");
    }

    #[test]
    fn built_objects_write_and_read_back() {
        let order = Element::node(
            "Документ.ЗаказКлиента",
            vec![
                Element::node(
                    "КлючевыеСвойства",
                    vec![
                        Element::leaf("Ссылка", "8b9660f6-6332-11ec-ad72-000c29b45b09"),
                        Element::leaf("Номер", "А-1 <черновик>"),
                    ],
                ),
                Element::leaf("Сумма", "0.10"),
            ],
        );
        let message = Message {
            header: vec![Element::leaf("Format", "http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8")],
            format: "http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8".into(),
            objects: vec![order],
        };
        let text = written(&message);
        assert!(text.contains("<Номер>А-1 &lt;черновик&gt;</Номер>"), "{text}");
        assert_eq!(read_message(text.as_bytes()).unwrap(), message);
    }
}
