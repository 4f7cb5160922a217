//! Integration tests of the ironlun binary.
