module ldsaref.test/gosender

go 1.19
