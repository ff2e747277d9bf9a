//! The little the shared catalog code needs from a database engine: run a
//! statement, visit the rows of a query, read typed columns. SQL is written
//! once, with SQLite's numbered placeholders (`?1`); engines with another
//! placeholder syntax translate it when they prepare a statement.

use crate::Result;

/// Which SQL dialect an engine speaks, where the shared SQL must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Param::Int(i64::from(value))
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(value: &'a [u8]) -> Self {
        Param::Bytes(value)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Param::Null, Into::into)
    }
}

/// A column value owned, for copying rows between engines.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    pub(crate) fn as_param(&self) -> Param<'_> {
        match self {
            Value::Null => Param::Null,
            Value::Int(value) => Param::Int(*value),
            Value::Text(value) => Param::Text(value),
            Value::Bytes(value) => Param::Bytes(value),
        }
    }
}

/// One result row; columns by position.
pub trait Row {
    fn opt_int(&self, index: usize) -> Result<Option<i64>>;
    fn opt_text(&self, index: usize) -> Result<Option<String>>;
    fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>>;
    /// A truth value: a boolean column, or an integer (non-zero is true).
    fn flag(&self, index: usize) -> Result<bool>;
    fn value(&self, index: usize) -> Result<Value>;
    fn column_name(&self, index: usize) -> Result<String>;
    fn len(&self) -> usize;

    fn int(&self, index: usize) -> Result<i64> {
        self.opt_int(index)?.ok_or_else(|| unexpected_null(index))
    }
    fn text(&self, index: usize) -> Result<String> {
        self.opt_text(index)?.ok_or_else(|| unexpected_null(index))
    }
    fn bytes(&self, index: usize) -> Result<Vec<u8>> {
        self.opt_bytes(index)?.ok_or_else(|| unexpected_null(index))
    }
}

fn unexpected_null(index: usize) -> crate::CatalogError {
    crate::CatalogError::CorruptRecord(format!("column {index} is NULL where a value is required"))
}

/// A connection, or a transaction on one.
pub trait Db {
    /// Run a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;

    /// Visit the rows of a query in order; the visitor returns `false` to stop.
    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        visit: &mut dyn FnMut(&dyn Row) -> Result<bool>,
    ) -> Result<()>;
}

impl dyn Db + '_ {
    /// The first row of a query, if any, mapped.
    pub(crate) fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut found = None;
        self.query_each(sql, params, &mut |row| {
            if let Some(map) = map.take() {
                found = Some(map(row)?);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The first row of a query, which must exist.
    pub(crate) fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| crate::CatalogError::CorruptRecord(format!("no row from: {}", first_line(sql))))
    }

    /// Every row of a query, mapped.
    pub(crate) fn query_all<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        self.query_each(sql, params, &mut |row| {
            rows.push(map(row)?);
            Ok(true)
        })?;
        Ok(rows)
    }

    /// Whether a query returns any row.
    pub(crate) fn exists(&mut self, sql: &str, params: &[Param<'_>]) -> Result<bool> {
        Ok(self.query_opt(sql, params, |_| Ok(()))?.is_some())
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// `?N` placeholders as `$N`, for engines that number parameters that way.
/// The shared SQL has no `?` anywhere else (patterns are parameters).
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    let mut translated = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            translated.push('$');
        } else {
            translated.push(c);
        }
    }
    translated
}

/// A row count as a LIMIT parameter: "no limit" (`usize::MAX`) must not wrap
/// to a negative number, which SQLite reads as no limit but PostgreSQL refuses.
pub(crate) fn row_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_are_renumbered_only_where_numbered() {
        assert_eq!(dollar_placeholders("a = ?1 AND b IN (?2, ?10)"), "a = $1 AND b IN ($2, $10)");
        assert_eq!(dollar_placeholders("x = '?' OR y = ?"), "x = '?' OR y = ?");
    }
}
