package retention

// PayloadBatchSQL is the purge's selection of the next runs due for a
// payload purge, for the test of its plan.
var PayloadBatchSQL = payloadBatch

// TombstoneBatchSQL is the purge's deletion of the next tombstones past
// their runDays, for the test of its plan.
var TombstoneBatchSQL = tombstoneBatch
