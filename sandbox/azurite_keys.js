// Preloaded into Azurite (`node --require`) by sandbox/azurite.py, so the sandbox's table storage finds a row
// by its key in the time Azure Table Storage does, whatever the size of its partition.
//
// Why: Azurite 3.35 keeps each table in a LokiJS collection with a binary index on PartitionKey and one on
// RowKey, and looks an entity up with findOne({PartitionKey, RowKey}). LokiJS uses the index of the first
// property only and scans the rows it found for the second, so every insert, read, update and delete costs
// as much as the partition holds rows: a backfill that writes its links into one partition slowed down as
// it went (an insert transaction took 217 ms at 6,000 rows, 435 ms at 30,000). Azure Table Storage's
// (PartitionKey, RowKey) is the table's clustered key. Asking LokiJS for the RowKey first uses the RowKey
// index (a row key is rare across partitions), then checks the PartitionKey on what it found: the same
// entity, found in logarithmic time.
"use strict";

const Module = require("module");
const path = require("path");

const azurite = path.dirname(require.resolve("azurite/package.json", { paths: [process.cwd(), __dirname] }));
const Loki = Module.createRequire(path.join(azurite, "dist", "src", "table"))("lokijs");
const findOne = Loki.Collection.prototype.findOne;

Loki.Collection.prototype.findOne = function (query) {
  if (query && Object.keys(query).length === 2 && "PartitionKey" in query && "RowKey" in query) {
    query = { RowKey: query.RowKey, PartitionKey: query.PartitionKey };
  }
  return findOne.call(this, query);
};
