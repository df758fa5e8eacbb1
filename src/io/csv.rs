//! The one CSV reader of the project (`fmseg evaluate`'s labels and scores, cohort `cases.csv`):
//! the RFC 4180 subset spreadsheets write, with errors that name the file and the line.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A CSV file: the header and the data records, each with the 1-based line it starts on.
#[derive(Debug)]
pub struct Csv {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Csv {
    /// Reads a comma-separated file with a header line (see [`parse`] for the dialect).
    pub fn read(path: &Path) -> Result<Csv> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut records = parse(&text).map_err(|m| Error::format(path, m))?.into_iter();
        let Some((_, header)) = records.next() else {
            return Err(Error::format(path, "empty: no header line"));
        };
        Ok(Csv { path: path.to_path_buf(), header, rows: records.collect() })
    }

    /// The index of column `name`, or an error naming the file and the columns it has.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::format(&self.path, format!("missing column {name:?} (the header has {:?})", self.header))
        })
    }

    /// Field `col` of a row, or an error naming the line.
    pub fn field<'a>(&self, line: usize, row: &'a [String], col: usize) -> Result<&'a str> {
        row.get(col).map(|s| s.as_str()).ok_or_else(|| self.width_error(line, row))
    }

    /// Every row has as many fields as the header, or an error naming the first that has not.
    pub fn check_widths(&self) -> Result<()> {
        match self.rows.iter().find(|(_, r)| r.len() != self.header.len()) {
            Some((line, row)) => Err(self.width_error(*line, row)),
            None => Ok(()),
        }
    }

    fn width_error(&self, line: usize, row: &[String]) -> Error {
        Error::format(&self.path, format!("line {line}: {} fields, the header has {}", row.len(), self.header.len()))
    }
}

/// Splits CSV text into records, each with the 1-based line it starts on: comma separators, LF
/// or CRLF line ends, double-quoted fields (which may hold commas, line breaks and `""` for a
/// quote). Unquoted fields are trimmed, quoted ones kept as written; spaces around the quotes
/// are allowed. A leading UTF-8 byte-order mark and blank lines are skipped.
pub fn parse(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut line, mut start) = (1usize, 1usize);
    // `quoted`: inside quotes; `was_quoted`: this field was quoted (only spaces and a separator
    // may follow the closing quote).
    let (mut quoted, mut was_quoted) = (false, false);
    let end_field = |field: &mut String, was_quoted: bool| {
        let f = std::mem::take(field);
        if was_quoted {
            f
        } else {
            f.trim().to_string()
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() && !was_quoted => {
                field.clear();
                (quoted, was_quoted) = (true, true)
            }
            ',' => {
                record.push(end_field(&mut field, was_quoted));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(end_field(&mut field, was_quoted));
                was_quoted = false;
                // A blank line is a record of one empty field: skip it.
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push((start, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                start = line;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field (quote the whole field)")),
            c if was_quoted && c.is_whitespace() => {}
            _ if was_quoted => {
                return Err(format!("line {line}: text after a closing quote (write \"\" for a quote inside one)"))
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field is not closed"));
    }
    record.push(end_field(&mut field, was_quoted));
    if !(record.len() == 1 && record[0].is_empty()) {
        records.push((start, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Vec<String>> {
        parse(text).unwrap().into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn fields_quotes_and_lines() {
        let r = parse("\u{feff}id,sex\r\n\"a,1\",M\n\n\"b\"\"\nc\",F\n").unwrap();
        assert_eq!(
            r,
            vec![
                (1, vec!["id".to_string(), "sex".to_string()]),
                (2, vec!["a,1".to_string(), "M".to_string()]),
                (4, vec!["b\"\nc".to_string(), "F".to_string()]),
            ]
        );
        assert_eq!(rows(" a , \"b, c\" ,\"d\"\"e\""), [["a", "b, c", "d\"e"]]);
        assert_eq!(rows("a,,"), [["a", "", ""]]);
        assert_eq!(rows("\" x \",y"), [[" x ", "y"]]);
    }

    #[test]
    fn malformed_records_name_the_line() {
        assert!(parse("id\n\"a").unwrap_err().starts_with("line 2:"));
        assert!(parse("id\na\"b").unwrap_err().starts_with("line 2:"));
        assert!(parse("id\n\"a\"b").unwrap_err().starts_with("line 2:"));
    }
}
