//! Mapping one source record into canonical events, through the compiled
//! bindings of a set.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::convert::{self, FieldValue};
use super::custom_fields::{CustomFieldsTemplate, CustomValues};
use super::fields::BindingTarget;
use super::record_keys::{RecordKeys, TopValues};
use super::source_path::SourcePath;
use super::spec::{Conversion, TargetKind};
use crate::model::{
    CanonicalEvent, Client, DealObservation, ExternalRef, Inn, InvoiceKind, InvoiceObservation, Money,
    PaymentObservation, PaymentShare, ShipmentObservation,
};

/// A binding ready to run.
#[derive(Debug, Clone)]
pub(crate) struct CompiledBinding {
    /// Shared with every record it maps and every trail step they make.
    pub name: Arc<str>,
    pub connector: String,
    pub system: String,
    pub record_kind: String,
    /// What the records become: deals, or documents about deals.
    pub target: TargetKind,
    pub filter: Option<String>,
    pub id: SourcePath,
    /// Where the parent's id is read (never defaulted).
    pub parent: Option<ValueSource>,
    /// Where an invoice or order names its deal.
    pub deal: Option<ValueSource>,
    /// Where a shipment names the order or invoice it covers.
    pub covers: Option<ValueSource>,
    /// Where a payment names the orders or invoices it pays.
    pub pays: Option<ValueSource>,
    /// Source path of the stage and the name of its stage map.
    pub stage: Option<(SourcePath, String)>,
    pub fields: Vec<CompiledField>,
    pub create_with: BTreeMap<String, String>,
    /// The first keys of all the paths above (`index_keys`).
    pub keys: RecordKeys,
    /// The custom fields the binding fills (`index_custom_fields`).
    pub custom: CustomFieldsTemplate,
}

/// How one canonical field is filled.
#[derive(Debug, Clone)]
pub(crate) struct CompiledField {
    pub target: BindingTarget,
    /// The canonical field as written (`client.inn`), for errors.
    pub name: String,
    /// `<name> currency`, for errors about an amount's currency.
    pub currency_name: String,
    pub value: ValueSource,
    pub required: bool,
    pub person: bool,
    pub currency: Option<ValueSource>,
    /// Where a custom field's value goes among the binding's custom fields
    /// (`index_custom_fields`); 0 for the other fields.
    pub custom_place: usize,
}

/// Where a value comes from and how it is converted.
#[derive(Debug, Clone)]
pub(crate) struct ValueSource {
    pub from: Option<SourcePath>,
    pub convert: Vec<Conversion>,
    pub default: Option<String>,
    /// `default` typed once when the binding is compiled (the typing is a
    /// pure function of the default and the conversions), so a record
    /// that falls back to it does not parse it again. `None` when there is
    /// no default or it cannot be typed: then each use reports why.
    pub typed_default: Option<FieldValue>,
}

/// One canonical event produced by one binding.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedRecord {
    /// Name of the binding that produced it (for the trace), shared with
    /// the binding: mapping a record does not copy it.
    pub binding: Arc<str>,
    pub event: CanonicalEvent,
}

/// Why a record could not be mapped. Every variant names the binding, and
/// the field and source path where there is one, so an admin can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("binding `{binding}`: filter `{filter}` failed: {reason}")]
    Filter { binding: String, filter: String, reason: String },
    #[error("binding `{binding}`: record id at `{path}` is missing")]
    MissingId { binding: String, path: String },
    #[error("binding `{binding}`, field `{field}` (from `{path}`): required value is missing")]
    Required { binding: String, field: String, path: String },
    #[error("binding `{binding}`, field `{field}` (from `{path}`): {reason}")]
    Field { binding: String, field: String, path: String, reason: String },
    #[error("binding `{binding}`: system stage `{stage}` (from `{path}`) is not in stage map `{map}`")]
    UnknownStage { binding: String, stage: String, path: String, map: String },
}

/// What the set knows that record mapping needs besides the binding.
pub(crate) struct MappingContext<'a> {
    pub lookups: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Connector instance → system user id → canonical person id.
    pub people_by_system_id: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub stage_maps: &'a BTreeMap<String, super::validate::CompiledStageMap>,
}

impl CompiledBinding {
    /// Whether the filter lets this record through.
    pub fn accepts(
        &self,
        filters: &super::filters::FilterRuntime,
        record: &serde_json::Value,
    ) -> Result<bool, MappingError> {
        let Some(filter) = &self.filter else { return Ok(true) };
        filters.accepts(filter, record).map_err(|reason| MappingError::Filter {
            binding: self.name.to_string(),
            filter: filter.clone(),
            reason,
        })
    }

    /// Maps a record this binding accepts into an observation of a deal,
    /// an invoice or order, or a shipment.
    pub fn map(&self, record: &serde_json::Value, ctx: &MappingContext<'_>) -> Result<MappedRecord, MappingError> {
        let top = self.keys.resolve(record);
        let record = &Record { value: record, top };
        let id = self
            .id
            .get_in(record.value, &record.top)
            .and_then(|v| FieldValue::from_json(v).ok().flatten())
            .map(FieldValue::into_text)
            .ok_or_else(|| MappingError::MissingId { binding: self.name.to_string(), path: self.id.to_string() })?;
        let source = ExternalRef::new(&self.system, &self.connector, id);
        let event = match self.target {
            TargetKind::Deal => self.map_deal(source, record, ctx)?,
            TargetKind::Invoice => self.map_invoice(source, InvoiceKind::Invoice, record, ctx)?,
            TargetKind::Order => self.map_invoice(source, InvoiceKind::Order, record, ctx)?,
            TargetKind::Shipment => self.map_shipment(source, record, ctx)?,
            TargetKind::Payment => self.map_payment(source, record, ctx)?,
        };
        Ok(MappedRecord { binding: Arc::clone(&self.name), event })
    }

    fn map_deal(
        &self,
        source: ExternalRef,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<CanonicalEvent, MappingError> {
        let mut observed = DealObservation::default();
        if let Some((path, map_name)) = &self.stage {
            self.map_stage(record, path, map_name, ctx, &mut observed)?;
        }
        // Custom fields are collected by place and put in their map at once
        // (see `custom_fields`).
        let mut custom = self.custom.values();
        if let Some(parent_source) = &self.parent
            && let Some(parent_id) = self.single(parent_source, "parent", record, ctx)?
        {
            observed.parent = Some(ExternalRef::new(&self.system, &self.connector, parent_id.into_text()));
        }
        for field in &self.fields {
            self.map_field(field, record, ctx, &mut observed, &mut custom)?;
        }
        observed.custom_fields = self.custom.fill(custom);
        Ok(CanonicalEvent::DealObserved { source, observed })
    }

    fn map_invoice(
        &self,
        source: ExternalRef,
        kind: InvoiceKind,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<CanonicalEvent, MappingError> {
        let deal = self.reference(self.deal.as_ref(), "deal", record, ctx)?;
        let mut observed = InvoiceObservation {
            kind,
            number: None,
            date: None,
            total: None,
            paid: None,
            shipped: None,
            client: None,
            custom_fields: Default::default(),
        };
        for field in &self.fields {
            let Some(value) = self.document_value(field, record, ctx)? else { continue };
            fn client(observed: &mut InvoiceObservation) -> &mut Client {
                observed.client.get_or_insert_with(Client::default)
            }
            match &field.target {
                BindingTarget::Number => observed.number = Some(value.into_text()),
                BindingTarget::Date => observed.date = Some(self.date(field, value, ctx)?),
                BindingTarget::Total => observed.total = Some(self.money(field, value, record, ctx)?),
                BindingTarget::Paid => observed.paid = Some(self.money(field, value, record, ctx)?),
                BindingTarget::Shipped => observed.shipped = Some(self.money(field, value, record, ctx)?),
                BindingTarget::ClientName => client(&mut observed).name = value.into_text(),
                BindingTarget::ClientInn => client(&mut observed).inn = Some(Inn::from_text(value.into_text())),
                BindingTarget::ClientKpp => client(&mut observed).kpp = Some(value.into_text()),
                BindingTarget::Custom(name) => {
                    observed.custom_fields.insert(name.as_str().into(), value.into_json());
                }
                // Validation keeps deal fields out of invoice bindings.
                _ => {}
            }
        }
        Ok(CanonicalEvent::InvoiceObserved { source, deal, observed })
    }

    fn map_shipment(
        &self,
        source: ExternalRef,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<CanonicalEvent, MappingError> {
        let covers =
            self.reference(self.covers.as_ref(), "covers", record, ctx)?.ok_or_else(|| MappingError::Required {
                binding: self.name.to_string(),
                field: "covers".into(),
                path: self.covers.as_ref().map(path_text).unwrap_or_default(),
            })?;
        let (mut number, mut date, mut amount) = (None, None, None);
        for field in &self.fields {
            let Some(value) = self.document_value(field, record, ctx)? else { continue };
            match &field.target {
                BindingTarget::Number => number = Some(value.into_text()),
                BindingTarget::Date => date = Some(self.date(field, value, ctx)?),
                BindingTarget::Amount => amount = Some(self.money(field, value, record, ctx)?),
                // Validation keeps other fields out of shipment bindings.
                _ => {}
            }
        }
        let amount = amount.ok_or_else(|| {
            let field = self.fields.iter().find(|f| f.target == BindingTarget::Amount);
            MappingError::Required {
                binding: self.name.to_string(),
                field: "amount".into(),
                path: field.map(|f| path_text(&f.value)).unwrap_or_default(),
            }
        })?;
        Ok(CanonicalEvent::ShipmentObserved { source, covers, observed: ShipmentObservation { number, date, amount } })
    }

    fn map_payment(
        &self,
        source: ExternalRef,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<CanonicalEvent, MappingError> {
        let (mut number, mut date) = (None, None);
        for field in self.fields.iter().filter(|f| f.target != BindingTarget::Amount) {
            let Some(value) = self.document_value(field, record, ctx)? else { continue };
            match &field.target {
                BindingTarget::Number => number = Some(value.into_text()),
                BindingTarget::Date => date = Some(self.date(field, value, ctx)?),
                // Validation keeps other fields out of payment bindings.
                _ => {}
            }
        }
        let shares = self.payment_shares(record, ctx)?;
        Ok(CanonicalEvent::PaymentObserved { source, observed: PaymentObservation { number, date, shares } })
    }

    /// What a payment pays of each document: one share, or one per item
    /// of a list `pays` with the amount beside it. An item naming no
    /// document (an advance) is no share.
    fn payment_shares(&self, record: &Record<'_>, ctx: &MappingContext<'_>) -> Result<Vec<PaymentShare>, MappingError> {
        let required = |field: &str, path: String| MappingError::Required {
            binding: self.name.to_string(),
            field: field.to_owned(),
            path,
        };
        let pays = self.pays.as_ref().ok_or_else(|| required("pays", String::new()))?;
        let amount = self.fields.iter().find(|f| f.target == BindingTarget::Amount);
        let amount = amount.ok_or_else(|| required("amount", String::new()))?;
        let reference = |id: FieldValue| ExternalRef::new(&self.system, &self.connector, id.into_text());
        if !pays.from.as_ref().is_some_and(SourcePath::is_list) {
            let document = self.single(pays, "pays", record, ctx)?.ok_or_else(|| required("pays", path_text(pays)))?;
            let value = self.document_value(amount, record, ctx)?;
            let value = value.ok_or_else(|| required("amount", path_text(&amount.value)))?;
            return Ok(vec![PaymentShare {
                pays: reference(document),
                amount: self.money(amount, value, record, ctx)?,
            }]);
        }
        let documents = self.items(pays, "pays", record, ctx)?;
        let amounts = self.items(&amount.value, &amount.name, record, ctx)?;
        if documents.len() != amounts.len() {
            let message = format!("{} items, but `pays` has {}", amounts.len(), documents.len());
            return Err(self.field_error(&amount.name, &amount.value, message));
        }
        let mut shares = Vec::with_capacity(documents.len());
        for (document, value) in documents.into_iter().zip(amounts) {
            let Some(document) = document else { continue };
            let value = value.ok_or_else(|| required("amount", path_text(&amount.value)))?;
            shares.push(PaymentShare { pays: reference(document), amount: self.money(amount, value, record, ctx)? });
        }
        Ok(shares)
    }

    /// Every item of a list path, converted, in order and with the empty
    /// ones kept as `None`, so two lists of one table line up.
    fn items(
        &self,
        source: &ValueSource,
        field: &str,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Vec<Option<FieldValue>>, MappingError> {
        let mut values = Vec::new();
        let Some(path) = &source.from else { return Ok(values) };
        let mut failed = None;
        path.for_each_item_in(record.value, &record.top, &mut |item| {
            if failed.is_none() {
                match item.map_or(Ok(None), |item| self.item(source, field, item, ctx)) {
                    Ok(value) => values.push(value),
                    Err(e) => failed = Some(e),
                }
            }
        });
        failed.map_or(Ok(values), Err)
    }

    /// The id another record of the same system and instance is named by
    /// (`deal:`, `covers:`), as an external ref.
    fn reference(
        &self,
        source: Option<&ValueSource>,
        what: &str,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<ExternalRef>, MappingError> {
        let Some(source) = source else { return Ok(None) };
        let id = self.single(source, what, record, ctx)?;
        Ok(id.map(|id| ExternalRef::new(&self.system, &self.connector, id.into_text())))
    }

    /// One value of a document field: a single value (documents have no
    /// list fields), `None` when not set; a missing required one fails.
    fn document_value(
        &self,
        field: &CompiledField,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        let value = self.single(&field.value, &field.name, record, ctx)?;
        if value.is_none() && field.required {
            return Err(MappingError::Required {
                binding: self.name.to_string(),
                field: field.name.clone(),
                path: path_text(&field.value),
            });
        }
        Ok(value)
    }

    /// A document date: a date, the date part of a date-time, or text read
    /// as a date.
    fn date(
        &self,
        field: &CompiledField,
        value: FieldValue,
        ctx: &MappingContext<'_>,
    ) -> Result<chrono::NaiveDate, MappingError> {
        match value {
            FieldValue::Date(date) => Ok(date),
            FieldValue::DateTime(at) => Ok(at.date_naive()),
            other => match convert::apply(&Conversion::Date, other, ctx.lookups) {
                Ok(FieldValue::Date(date)) => Ok(date),
                Ok(other) => {
                    Err(self.field_error(&field.name, &field.value, format!("`{}` is not a date", other.as_text())))
                }
                Err(e) => Err(self.field_error(&field.name, &field.value, e.to_string())),
            },
        }
    }

    fn map_stage(
        &self,
        record: &Record<'_>,
        path: &SourcePath,
        map_name: &str,
        ctx: &MappingContext<'_>,
        observed: &mut DealObservation,
    ) -> Result<(), MappingError> {
        let Some(raw) = path.get_in(record.value, &record.top) else { return Ok(()) };
        // Text, the usual case, is looked up where it lies; blank text and
        // other values take `FieldValue`'s rules.
        let system_stage = match raw {
            serde_json::Value::String(text) if !convert::is_blank_text(text) => Cow::Borrowed(text.as_str()),
            other => match FieldValue::from_json(other).ok().flatten() {
                Some(value) => Cow::Owned(value.into_text()),
                None => return Ok(()),
            },
        };
        let map = ctx.stage_maps.get(map_name);
        let canonical =
            map.and_then(|m| m.inbound.get(system_stage.as_ref())).ok_or_else(|| MappingError::UnknownStage {
                binding: self.name.to_string(),
                stage: system_stage.clone().into_owned(),
                path: path.to_string(),
                map: map_name.to_owned(),
            })?;
        observed.pipeline = map.map(|m| m.pipeline.clone());
        observed.stage = Some(canonical.clone());
        Ok(())
    }

    fn map_field(
        &self,
        field: &CompiledField,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
        observed: &mut DealObservation,
        custom: &mut CustomValues,
    ) -> Result<(), MappingError> {
        let list = field.value.from.as_ref().is_some_and(SourcePath::is_list);
        if !list {
            // A single value, the usual case, goes straight to its field,
            // not through a list of one; a single person is translated as
            // it is read.
            let value = if field.person {
                self.single_person(field, record, ctx)?
            } else {
                self.single(&field.value, &field.name, record, ctx)?
            };
            return match value {
                Some(value) => self.put_value(field, value, record, ctx, observed, custom),
                None => self.missing(field),
            };
        }
        // A list of texts (e-mails, phones) is gathered as text at once,
        // not as values that are then copied into a list of texts.
        let texts = !field.person && matches!(field.target, BindingTarget::ClientEmails | BindingTarget::ClientPhones);
        let found = if texts {
            Found::Texts(self.list(&field.value, &field.name, record, ctx, FieldValue::into_text)?)
        } else {
            Found::Many(self.list(&field.value, &field.name, record, ctx, |value| value)?)
        };
        if found.is_empty() {
            return self.missing(field);
        }
        let found = match found {
            Found::Many(values) if field.person => {
                Found::Many(values.into_iter().map(|v| self.person(field, v, ctx)).collect::<Result<_, _>>()?)
            }
            other => other,
        };
        // The values are moved into the observation: no text is copied.
        match &field.target {
            BindingTarget::ClientEmails => client(observed).emails = found.texts(),
            BindingTarget::ClientPhones => client(observed).phones = found.texts(),
            BindingTarget::Custom(_) => {
                let json = serde_json::Value::Array(found.into_vec().into_iter().map(FieldValue::into_json).collect());
                custom.set(field.custom_place, json);
            }
            // A field of one value takes the list's first.
            _ => self.put_value(field, found.first(), record, ctx, observed, custom)?,
        }
        Ok(())
    }

    /// A field's value is missing: an error when it is required.
    fn missing(&self, field: &CompiledField) -> Result<(), MappingError> {
        if field.required {
            return Err(MappingError::Required {
                binding: self.name.to_string(),
                field: field.name.clone(),
                path: path_text(&field.value),
            });
        }
        Ok(())
    }

    /// Puts one value into its field of the observation (moved: no text
    /// is copied).
    fn put_value(
        &self,
        field: &CompiledField,
        value: FieldValue,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
        observed: &mut DealObservation,
        custom: &mut CustomValues,
    ) -> Result<(), MappingError> {
        match &field.target {
            BindingTarget::Title => observed.title = Some(value.into_text()),
            BindingTarget::Amount => observed.amount = Some(self.money(field, value, record, ctx)?),
            BindingTarget::ClientName => client(observed).name = value.into_text(),
            BindingTarget::ClientInn => client(observed).inn = Some(Inn::from_text(value.into_text())),
            BindingTarget::ClientKpp => client(observed).kpp = Some(value.into_text()),
            BindingTarget::ClientEmails => client(observed).emails = vec![value.into_text()],
            BindingTarget::ClientPhones => client(observed).phones = vec![value.into_text()],
            BindingTarget::Responsible => observed.responsible = Some(value.into_text()),
            BindingTarget::Actor => observed.actor = Some(value.into_text()),
            // Validation keeps document fields out of deal bindings.
            BindingTarget::Number
            | BindingTarget::Date
            | BindingTarget::Total
            | BindingTarget::Paid
            | BindingTarget::Shipped => {}
            BindingTarget::Custom(_) => custom.set(field.custom_place, value.into_json()),
        }
        Ok(())
    }

    fn money(
        &self,
        field: &CompiledField,
        value: FieldValue,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Money, MappingError> {
        // An amount is always a number, so `decimal` is implied.
        let amount: Decimal = match value {
            FieldValue::Number(d) => d,
            other => convert::parse_decimal(&other.as_text())
                .map_err(|e| self.field_error(&field.name, &field.value, e.to_string()))?,
        };
        let currency_name = &field.currency_name;
        let currency = match &field.currency {
            Some(source) => self.single(source, currency_name, record, ctx)?,
            None => None,
        };
        let Some(currency) = currency else {
            let path = field.currency.as_ref().map(path_text).unwrap_or_default();
            return Err(MappingError::Required { binding: self.name.to_string(), field: currency_name.clone(), path });
        };
        Money::with_code(amount, currency.into_text()).map_err(|e| {
            let source = field.currency.as_ref().unwrap_or(&field.value);
            self.field_error(currency_name, source, e.to_string())
        })
    }

    /// Translates a system user id into a canonical person id.
    fn person(
        &self,
        field: &CompiledField,
        value: FieldValue,
        ctx: &MappingContext<'_>,
    ) -> Result<FieldValue, MappingError> {
        self.person_named(field, &value.as_text(), ctx)
    }

    /// `single` and then `person`. A user id that is text in the record
    /// and has no conversions (the usual case) is looked up where it lies,
    /// not copied into a value that the translation drops at once.
    fn single_person(
        &self,
        field: &CompiledField,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        let source = &field.value;
        let raw = source.from.as_ref().and_then(|p| p.get_in(record.value, &record.top));
        // Blank text is "not set", as `convert_text` decides; the default
        // path below handles it.
        if let Some(serde_json::Value::String(user)) = raw
            && source.convert.is_empty()
            && !convert::is_blank_text(user)
        {
            return self.person_named(field, user, ctx).map(Some);
        }
        self.single(source, &field.name, record, ctx)?.map(|value| self.person(field, value, ctx)).transpose()
    }

    /// `person` for a user id as text.
    fn person_named(
        &self,
        field: &CompiledField,
        user: &str,
        ctx: &MappingContext<'_>,
    ) -> Result<FieldValue, MappingError> {
        let people = ctx.people_by_system_id.get(&self.connector);
        people.and_then(|p| p.get(user)).map(|id| FieldValue::Text(id.clone())).ok_or_else(|| {
            self.field_error(
                &field.name,
                &field.value,
                format!("user `{user}` of `{}` is not declared under `people`", self.connector),
            )
        })
    }

    /// Reads, defaults and converts a single value; `None` = not set.
    fn single(
        &self,
        source: &ValueSource,
        field: &str,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        let converted = match source.from.as_ref().and_then(|p| p.get_in(record.value, &record.top)) {
            // Text, the usual case, is converted borrowed.
            Some(serde_json::Value::String(text)) => convert::convert_text(text, &source.convert, ctx.lookups)
                .map_err(|e| self.field_error(field, source, e.to_string()))?,
            Some(v) => match FieldValue::from_json(v).map_err(|e| self.field_error(field, source, e))? {
                Some(raw) => self.convert(source, field, raw, ctx)?,
                None => None,
            },
            None => None,
        };
        match converted {
            Some(value) => Ok(Some(value)),
            None => self.default(source, field, ctx),
        }
    }

    /// The `default:` of a value, typed like the field.
    fn default(
        &self,
        source: &ValueSource,
        field: &str,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        let Some(default) = &source.default else { return Ok(None) };
        if let Some(typed) = &source.typed_default {
            return Ok(Some(typed.clone()));
        }
        convert::typed_default(default, &source.convert, ctx.lookups)
            .map(Some)
            .map_err(|e| self.field_error(field, source, format!("default: {e}")))
    }

    /// Reads every item of a `[*]` path, each made what the caller keeps
    /// by `keep`; empty items are skipped.
    fn list<T>(
        &self,
        source: &ValueSource,
        field: &str,
        record: &Record<'_>,
        ctx: &MappingContext<'_>,
        mut keep: impl FnMut(FieldValue) -> T,
    ) -> Result<Vec<T>, MappingError> {
        let mut values = Vec::new();
        let mut failed = None;
        if let Some(path) = &source.from {
            path.for_each_in(record.value, &record.top, &mut |item| {
                if failed.is_some() {
                    return;
                }
                match self.item(source, field, item, ctx) {
                    Ok(Some(value)) => values.push(keep(value)),
                    Ok(None) => {}
                    Err(e) => failed = Some(e),
                }
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if values.is_empty()
            && let Some(value) = self.default(source, field, ctx)?
        {
            values.push(keep(value));
        }
        Ok(values)
    }

    /// One item of a list, converted like a single value (text borrowed).
    fn item(
        &self,
        source: &ValueSource,
        field: &str,
        item: &serde_json::Value,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        if let serde_json::Value::String(text) = item {
            return convert::convert_text(text, &source.convert, ctx.lookups)
                .map_err(|e| self.field_error(field, source, e.to_string()));
        }
        match FieldValue::from_json(item).map_err(|e| self.field_error(field, source, e))? {
            Some(raw) => self.convert(source, field, raw, ctx),
            None => Ok(None),
        }
    }

    fn convert(
        &self,
        source: &ValueSource,
        field: &str,
        mut value: FieldValue,
        ctx: &MappingContext<'_>,
    ) -> Result<Option<FieldValue>, MappingError> {
        for conversion in &source.convert {
            if convert::is_emptied(conversion, &value) {
                return Ok(None);
            }
            value = convert::apply(conversion, value, ctx.lookups)
                .map_err(|e| self.field_error(field, source, e.to_string()))?;
        }
        Ok(Some(value))
    }

    fn field_error(&self, field: &str, source: &ValueSource, reason: impl Into<String>) -> MappingError {
        MappingError::Field {
            binding: self.name.to_string(),
            field: field.to_owned(),
            path: path_text(source),
            reason: reason.into(),
        }
    }
}

/// The observation's client, made when the first client field is mapped.
fn client(observed: &mut DealObservation) -> &mut Client {
    observed.client.get_or_insert_with(Client::default)
}

/// The values a list field map found, possibly none, or already made text.
enum Found {
    Many(Vec<FieldValue>),
    Texts(Vec<String>),
}

impl Found {
    fn is_empty(&self) -> bool {
        match self {
            Found::Many(values) => values.is_empty(),
            Found::Texts(texts) => texts.is_empty(),
        }
    }

    /// The first value (the caller checked there is one).
    fn first(self) -> FieldValue {
        match self {
            Found::Many(values) => values.into_iter().next().expect("not empty"),
            Found::Texts(texts) => FieldValue::Text(texts.into_iter().next().expect("not empty")),
        }
    }

    fn into_vec(self) -> Vec<FieldValue> {
        match self {
            Found::Many(values) => values,
            Found::Texts(texts) => texts.into_iter().map(FieldValue::Text).collect(),
        }
    }

    fn texts(self) -> Vec<String> {
        match self {
            Found::Texts(texts) => texts,
            other => other.into_vec().into_iter().map(FieldValue::into_text).collect(),
        }
    }
}

/// A record with its binding's top-level keys looked up.
struct Record<'v> {
    value: &'v serde_json::Value,
    top: TopValues<'v>,
}

impl CompiledBinding {
    /// Gives every path of the binding its slot among the record keys the
    /// binding reads, so `map` looks them all up in one walk.
    pub(crate) fn index_keys(&mut self) {
        let mut paths: Vec<&mut SourcePath> = vec![&mut self.id];
        paths.extend(self.parent.as_mut().and_then(|p| p.from.as_mut()));
        paths.extend(self.deal.as_mut().and_then(|p| p.from.as_mut()));
        paths.extend(self.covers.as_mut().and_then(|p| p.from.as_mut()));
        paths.extend(self.pays.as_mut().and_then(|p| p.from.as_mut()));
        paths.extend(self.stage.as_mut().map(|(p, _)| p));
        for field in &mut self.fields {
            paths.extend(field.value.from.as_mut());
            paths.extend(field.currency.as_mut().and_then(|c| c.from.as_mut()));
        }
        let keys = RecordKeys::new(paths.iter().filter_map(|p| p.first_key()));
        for path in paths {
            if let Some(slot) = path.first_key().and_then(|k| keys.slot(k)) {
                path.set_slot(slot);
            }
        }
        self.keys = keys;
    }

    /// Gives every custom field its place among the binding's custom
    /// fields, so `map` collects their values without comparing names.
    pub(crate) fn index_custom_fields(&mut self) {
        let template = CustomFieldsTemplate::new(self.fields.iter().filter_map(CompiledField::custom_name));
        for field in &mut self.fields {
            let place = field.custom_name().and_then(|name| template.place(name));
            if let Some(place) = place {
                field.custom_place = place;
            }
        }
        self.custom = template;
    }
}

impl CompiledField {
    /// The name of the custom field this fills, if it fills one.
    fn custom_name(&self) -> Option<&str> {
        match &self.target {
            BindingTarget::Custom(name) => Some(name),
            _ => None,
        }
    }
}

fn path_text(source: &ValueSource) -> String {
    source.from.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "default".to_owned())
}
